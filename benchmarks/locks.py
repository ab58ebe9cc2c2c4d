"""Overhead of primitive tracking on a lock-contention workload.

Usage::

    python benchmarks/locks.py [--runs N] [--markdown]

Many tasks contend on a few Locks, Semaphores, a Condition and Queues (every
acquisition of a contended lock goes through the waiters deque and a wakeup,
so both the fast path and the slow path are exercised).  Configurations:

* ``plain``           no loopscope
* ``loopscope-noprims`` loopscope installed with ``primitives=False``
  (task tracking only)
* ``loopscope``       loopscope installed with primitive tracking (default)

Like ``run.py``: each measurement runs in a fresh child process, only the
workload is timed (``perf_counter`` inside the running loop), configurations
are interleaved run by run, and medians are compared.  The issue's budget
(instrumentation of primitives <= 1.2x) is for ``loopscope`` /
``loopscope-noprims``: what primitive tracking adds to the rest of the agent.
``loopscope`` / ``plain`` is printed too.  For instruction counts of the same
workload (noise-free): ``benchmarks/instructions.py --workload locks``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
WORKERS = 200
ROUNDS = int(os.environ.get("LOOPSCOPE_BENCH_ROUNDS", "250"))  # smaller for instruction counting
LOCKS = 4
TARGET = 1.2
CONFIGS = ["plain", "loopscope-noprims", "loopscope"]


async def workload() -> None:
    locks = [asyncio.Lock() for _ in range(LOCKS)]
    sems = [asyncio.Semaphore(3), asyncio.BoundedSemaphore(2)]
    cond = asyncio.Condition()
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=8)
    done = asyncio.Event()
    counter = [0]

    async def worker(i: int) -> None:
        for r in range(ROUNDS):
            async with locks[(i + r) % LOCKS]:
                counter[0] += 1
                await asyncio.sleep(0)
            async with sems[r % 2]:
                await asyncio.sleep(0)
            if r % 10 == 0:
                async with cond:
                    cond.notify_all()
            await q.put(r)

    async def consumer() -> None:
        while True:
            await q.get()
            q.task_done()

    async def waiter() -> None:
        async with cond:
            while not done.is_set():
                await cond.wait()

    consumers = [asyncio.create_task(consumer()) for _ in range(4)]
    waiters = [asyncio.create_task(waiter()) for _ in range(8)]
    await asyncio.gather(*[asyncio.create_task(worker(i)) for i in range(WORKERS)])
    await q.join()
    done.set()
    async with cond:
        cond.notify_all()
    await asyncio.gather(*waiters)
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)


def child(config: str) -> None:
    if config != "plain":
        import loopscope

        loopscope.install(server=False, dump_signal="", primitives=config == "loopscope")

    async def timed() -> float:
        t0 = time.perf_counter()
        await workload()
        return time.perf_counter() - t0

    print(f"{asyncio.run(timed()):.6f}")


def run_child(config: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSCOPE_")}
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, __file__, "--child", config], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"child {config} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for i in range(args.runs):
        for c in CONFIGS:  # interleaved: noise hits every configuration alike
            times[c].append(run_child(c))
        print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{c} {times[c][-1]:.3f}s" for c in CONFIGS), file=sys.stderr)
    base = statistics.median(times["plain"])
    print(f"Python {platform.python_version()}, {WORKERS} workers x {ROUNDS} rounds, {args.runs} runs, medians")
    if args.markdown:
        print("\n| config | median s | min s | ratio |\n| --- | --- | --- | --- |")
    for c in CONFIGS:
        med = statistics.median(times[c])
        if args.markdown:
            print(f"| {c} | {med:.3f} | {min(times[c]):.3f} | {med / base:.2f}x |")
        else:
            print(f"{c:20s} median {med:.3f}s  min {min(times[c]):.3f}s  ratio {med / base:.2f}x")
    ratio = statistics.median(times["loopscope"]) / statistics.median(times["loopscope-noprims"])
    print(f"primitive tracking (loopscope / loopscope-noprims): {ratio:.2f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")
    print(f"all of loopscope (loopscope / plain): {statistics.median(times['loopscope']) / base:.2f}x")


if __name__ == "__main__":
    main()
