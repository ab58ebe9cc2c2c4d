"""Saturated executors.

The loop's default executor has max_workers=2 and gets three jobs that
block (in their worker threads, not the loop) until RELEASE_FILE exists:
two run, one waits in the queue.  A second ThreadPoolExecutor(max_workers=3)
is registered with loopscope as "pool-a" and runs one such job.

Usage: executors.py RELEASE_FILE.  Prints READY once the jobs are submitted,
DONE when all four have returned.
"""

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import loopscope
from _common import exit_with_parent, ready

RELEASE = sys.argv[1]


def job(i):
    deadline = time.monotonic() + 30
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.01)
    return i


async def main():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    pool = ThreadPoolExecutor(max_workers=3)
    loopscope.register_executor(pool, "pool-a")
    futs = [loop.run_in_executor(None, job, i) for i in range(3)]
    futs.append(loop.run_in_executor(pool, job, 3))
    ready()
    print("DONE", sorted(await asyncio.gather(*futs)), flush=True)
    await asyncio.Event().wait()


exit_with_parent()
asyncio.run(main())
