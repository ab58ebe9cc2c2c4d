"""100,000 live tasks from three creation sites, and a lag meter.

Usage: scale.py N [--no-settle].  Creates N tasks (50 % at site A, 30 % at B, 20 % at C),
each awaiting one Event, then prints READY.  A ticker task sleeps 1 ms in a
loop and measures how late each wake-up is; every 0.25 s it prints
``LAG <monotonic time> <max lateness in ms over the window>`` so the test
can see how long its queries paused the loop, and ``GC <time> <ms>`` after
each full garbage collection.
"""

import asyncio
import gc
import sys
import time

from _common import exit_with_parent, ready


async def waits(ev):
    await ev.wait()


def spawn_a(ev, n):
    return [asyncio.create_task(waits(ev)) for _ in range(n)]  # LINE:site-a


def spawn_b(ev, n):
    return [asyncio.create_task(waits(ev)) for _ in range(n)]  # LINE:site-b


def spawn_c(ev, n):
    return [asyncio.create_task(waits(ev)) for _ in range(n)]  # LINE:site-c


async def ticker():
    window_end = time.monotonic() + 0.25
    worst = 0.0
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(0.001)
        late = time.monotonic() - t0 - 0.001
        worst = max(worst, late)
        now = time.monotonic()
        if now >= window_end:
            print(f"LAG {now:.6f} {worst * 1000:.3f}", flush=True)
            worst = 0.0
            window_end = now + 0.25


def log_full_collections():
    """Print ``GC <monotonic> <ms>`` for each full (generation 2) collection,
    so a lag spike can be told apart from a garbage collection pause."""
    started = {}

    def callback(phase, info):
        if info.get("generation") != 2:
            return
        if phase == "start":
            started["t"] = time.monotonic()
        elif "t" in started:
            now = time.monotonic()
            print(f"GC {now:.6f} {(now - started.pop('t')) * 1000:.3f}", flush=True)

    gc.callbacks.append(callback)


async def main(n):
    ev = asyncio.Event()
    tasks = spawn_a(ev, n * 5 // 10) + spawn_b(ev, n * 3 // 10)
    tasks += spawn_c(ev, n - len(tasks))
    await asyncio.sleep(0)  # every task runs to its ev.wait()
    asyncio.create_task(ticker(), name="ticker")
    log_full_collections()
    await asyncio.sleep(0.3)  # the ticker's first window covers the start
    # Settle the garbage collector's debt from creating 100k tasks: left
    # alone, the next allocations of *anyone* (the agent's queries included)
    # tip a full collection of ~800k objects, a 200+ ms pause on 3.13/3.14
    # that the program would pay anyway.  The test measures the agent.
    if "--no-settle" not in sys.argv:
        gc.collect()
    ready()
    await ev.wait()


exit_with_parent()
asyncio.run(main(int(sys.argv[1])))
