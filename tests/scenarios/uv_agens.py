"""Async generators on uvloop, and uvloop's own finalisation of them.

"kept" is suspended at a yield and stays referenced; "dropped" was
suspended, then dropped: uvloop's finalizer hook closes it (its ``finally``
prints FINALIZED dropped) before READY.  On SIGTERM main returns and
uvloop.run's ``shutdown_asyncgens`` closes "kept" (FINALIZED kept); after
the loop stopped, the thread's asyncgen hooks are printed (HOOKS ...): the
ones from before the loop ran.
"""

import asyncio
import gc
import signal
import sys

import uvloop

from _common import exit_with_parent, ready

KEEP = []


async def kept():
    try:
        while True:
            yield 1  # LINE:kept-yield
    finally:
        print("FINALIZED kept", flush=True)


async def dropped():
    try:
        while True:
            yield 1
    finally:
        print("FINALIZED dropped", flush=True)


async def main():
    k = kept()
    await k.__anext__()  # LINE:kept-first
    KEEP.append(k)
    d = dropped()
    await d.__anext__()
    del d
    gc.collect()
    for _ in range(20):  # uvloop's finalizer schedules aclose() in a task
        await asyncio.sleep(0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("LOOP", type(asyncio.get_running_loop()).__module__, flush=True)
    ready()
    await stop.wait()


exit_with_parent()
uvloop.run(main())
hooks = sys.get_asyncgen_hooks()
print("HOOKS", hooks.firstiter, hooks.finalizer, flush=True)
