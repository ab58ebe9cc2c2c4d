"""Observer effect of ``loopscope top`` on a process with 100,000 tasks.

Usage::

    python benchmarks/top_observer.py [--runs N] [--tasks N] [--seconds S]

Each run starts a fresh program under the agent: it creates ``--tasks``
idle tasks, then runs a CPU-bound asyncio workload (ping-pong through a
queue) for ``--seconds`` and prints its throughput (messages per second).
Runs alternate between *idle* (nobody connected) and *polled* (a client
does exactly what ``top`` does: ``TopData.refresh`` — one ``tasks.delta``
call — at 1 Hz, backing off as the app does, from the CPU time the agent
reports), so noise hits both alike.
The first load of the mirror happens before the timed window (the app
does it once when it opens).  Reports medians and their ratio, and how
long the polled calls took (the app refreshes every max(1 s, 20x that)).

Also prints how long the app's local view actions take on the mirror of
that real process (sort by each key, a filter, a grouping).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from loopscope.tui.app import MAX_SHARE  # noqa: E402
from loopscope.tui.datasource import AgentBackend, RowFilter, TaskView, TopData  # noqa: E402

PROGRAM = r"""
import asyncio, sys, time
N, SECONDS = int(sys.argv[1]), float(sys.argv[2])

async def idle(ev):
    await ev.wait()

async def main():
    ev = asyncio.Event()
    tasks = [asyncio.create_task(idle(ev)) for _ in range(N)]
    await asyncio.sleep(0)
    import gc; gc.collect()
    print("READY", flush=True)
    assert sys.stdin.readline().strip() == "GO"
    q = asyncio.Queue()
    n = 0
    async def pong():
        while True:
            await q.get()
    p = asyncio.create_task(pong())
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        for _ in range(1000):
            q.put_nowait(1)
        await asyncio.sleep(0)
        n += 1000
    print("RATE", n / (time.perf_counter() - t0), flush=True)
    p.cancel()
    ev.set()

asyncio.run(main())
"""


def one_run(polled: bool, tasks: int, seconds: float, sockdir: str, actions: list[dict[str, float]] | None, calls: list[float] | None = None) -> float:
    env = {**os.environ, "LOOPSCOPE_SOCKET_DIR": sockdir, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopscope", "run", "--", sys.executable, "-c", PROGRAM, str(tasks), str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "READY"
        data = None
        if polled:
            data = TopData(AgentBackend(os.path.join(sockdir, f"{proc.pid}.sock"), proc.pid, timeout=60))
            data.refresh()  # the first load, once, as when top opens
            if actions is not None:
                actions.append(time_actions(data))
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        if data is not None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                data.refresh()
                if calls is not None:
                    calls.append((data.last_call_s, data.last_cost_s))
                time.sleep(max(0.0, max(1.0, data.last_cost_s / MAX_SHARE) - data.last_call_s))
        line = proc.stdout.readline().split()
        if data is not None:
            data.close()
        return float(line[1])
    finally:
        proc.kill()
        proc.wait()


def time_actions(data: TopData) -> dict[str, float]:
    rows = list(data.mirror.rows.values())
    out = {}
    for label, view in [
        ("sort age", TaskView("age")), ("sort name", TaskView("name")), ("sort -coro", TaskView("-coro")), ("sort site", TaskView("site")),
        ("filter name=Task-1*", TaskView("age", RowFilter.parse("name=Task-1*"))), ("filter word 'idle'", TaskView("age", RowFilter.parse("idle"))),
        ("group by site", TaskView("age", group_by="site")), ("group by state", TaskView("age", group_by="state")),
    ]:
        t = time.perf_counter()
        view.build(rows, data.now())
        out[label] = (time.perf_counter() - t) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    sockdir = tempfile.mkdtemp(prefix="lstopb", dir="/tmp")
    idle, polled, actions, calls = [], [], [], []  # type: ignore[var-annotated]
    for i in range(args.runs):
        for mode in ("idle", "polled") if i % 2 == 0 else ("polled", "idle"):
            rate = one_run(mode == "polled", args.tasks, args.seconds, os.path.join(sockdir, "s"), actions, calls)
            (polled if mode == "polled" else idle).append(rate)
            print(f"run {i + 1} {mode:6}: {rate:,.0f} messages/s", flush=True)
    mi, mp = statistics.median(idle), statistics.median(polled)
    print(f"\n{args.tasks:,} tasks, {args.seconds:.0f} s per run, {args.runs} runs each, Python {sys.version.split()[0]}")
    print(f"median idle   {mi:,.0f} messages/s")
    print(f"median polled {mp:,.0f} messages/s")
    print(f"slowdown with top attached: {(1 - mp / mi) * 100:.1f}% (ratio {mi / mp:.3f})")
    wall, cost = statistics.median(c[0] for c in calls), statistics.median(c[1] for c in calls)
    print(f"tasks.delta while polled ({len(calls)} calls): wall median {wall * 1000:.0f} ms (max {max(c[0] for c in calls) * 1000:.0f}), "
          f"agent CPU median {cost * 1000:.0f} ms (max {max(c[1] for c in calls) * 1000:.0f}): a refresh every {max(1.0, cost / MAX_SHARE):.2f} s at the median")
    print("\nview actions on the mirror of the real process (ms, median over runs):")
    for key in actions[0]:
        print(f"  {key:24} {statistics.median(a[key] for a in actions):6.0f}")


if __name__ == "__main__":
    main()
