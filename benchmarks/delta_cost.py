"""What one ``tasks.delta`` call costs at 100,000 tasks: ``top``'s refresh.

Usage::

    python benchmarks/delta_cost.py [--tasks N] [--calls K] [--churn F]

Starts a program with ``--tasks`` tasks under the agent (a child process,
``loopscope run``), then drives it from here exactly as ``top`` does
(``TopData.refresh``: ``tasks.delta`` with ``stats: true``, 20,000 new
rows per call) and prints milliseconds per call, measured by the client
around each call (``TopData.last_call_s``, the number ``top``'s poller backs
off from: it waits at least 20x that between calls):

* **first load** — every chunk of the first refresh, together;
* **steady, nothing changes** — all tasks idle, calls 0.2 s apart;
* **steady, churn** — a second program where ``--churn`` of the tasks
  (default 1 %) end and are replaced every second, one call a second.

Each line also gives the agent's CPU per call: the monitored process's
CPU time (``/proc``) over the calls, minus its CPU over as long a window
without calls (the program's own work, the agent's watchdog), divided by
the number of calls.  On a shared machine the round trip includes waiting
for a core; the CPU time does not.  Medians of ``--calls`` calls; the
machine's noise shows in min/max.
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

from loopscope.tui.datasource import CHUNK, AgentBackend, TopData  # noqa: E402

PROGRAM = r"""
import asyncio, gc, random, sys
N, CHURN = int(sys.argv[1]), float(sys.argv[2])
LIFETIME = 10.0  # seconds a churning task lives: N * CHURN * LIFETIME of them

async def idle(ev):
    await ev.wait()

async def short(delay):
    await asyncio.sleep(delay)

async def churn(per_second):
    # one batch every 0.1 s: per_second tasks start (and as many end) per second
    batch = max(1, round(per_second / 10))
    while True:
        await asyncio.sleep(0.1)
        for _ in range(batch):
            asyncio.create_task(short(LIFETIME))

async def main():
    ev = asyncio.Event()
    per_second = N * CHURN
    churning = int(per_second * LIFETIME)
    tasks = [asyncio.create_task(idle(ev)) for _ in range(N - churning)]
    for _ in range(churning):  # not kept: freed when they end, as are the later ones
        asyncio.create_task(short(random.uniform(0, LIFETIME)))
    if per_second:
        asyncio.create_task(churn(per_second))
    await asyncio.sleep(0)
    gc.collect()
    print("READY", flush=True)
    await ev.wait()

asyncio.run(main())
"""


def start(tasks: int, churn: float, sockdir: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LOOPSCOPE_SOCKET_DIR": sockdir, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopscope", "run", "--", sys.executable, "-c", PROGRAM, str(tasks), str(churn)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        raise SystemExit(f"the program did not start: {line!r}")
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(tasks: int, churn: float, calls: int, pause: float, sockdir: str) -> tuple[float, list[float], float, int]:
    """(first load ms, steady ms per call, agent CPU ms per call, rows held at the end)."""
    proc = start(tasks, churn, sockdir)
    try:
        data = TopData(AgentBackend(os.path.join(sockdir, f"{proc.pid}.sock"), proc.pid, timeout=120))
        data.refresh()
        first = data.last_call_s * 1000
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(pause * calls)
        background = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        data.refresh()  # catch up with what changed during that window
        steady = []
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        for _ in range(calls):
            time.sleep(pause)
            data.refresh()
            steady.append(data.last_call_s * 1000)
        agent_cpu = (cpu_seconds(proc.pid) - c0 - background * (time.monotonic() - t0)) / calls * 1000
        held = len(data.mirror.rows)
        data.close()
        return first, steady, agent_cpu, held
    finally:
        proc.kill()
        proc.wait()


def line(label: str, xs: list[float], cpu: float) -> str:
    return f"{label:26} median {statistics.median(xs):7.1f} ms  (min {min(xs):6.1f}, max {max(xs):6.1f}; {len(xs)} calls)  agent CPU {cpu:6.1f} ms/call"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--churn", type=float, default=0.01, help="share of the tasks replaced per second (0 skips that part)")
    args = ap.parse_args()
    sockdir = os.path.join(tempfile.mkdtemp(prefix="lsdelta", dir="/tmp"), "s")
    print(f"Python {sys.version.split()[0]}, {args.tasks:,} tasks, loopscope from {ROOT / 'src'}", flush=True)
    first, steady, cpu, held = measure(args.tasks, 0.0, args.calls, 0.2, sockdir)
    print(f"{'first load':26} {first:7.1f} ms  ({held:,} rows, {-(-held // CHUNK)} calls)", flush=True)
    print(line("steady, nothing changes", steady, cpu), flush=True)
    if args.churn:
        _first, churned, cpu, held = measure(args.tasks, args.churn, args.calls, 1.0, sockdir)
        print(line(f"steady, {args.churn:.0%} churn per s", churned, cpu), flush=True)


if __name__ == "__main__":
    main()
