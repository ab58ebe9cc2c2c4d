"""A loop blocked by synchronous code called from a task.

After READY the task "blocker" calls ``block_the_loop()``, which sleeps with
``time.sleep`` (the loop can run nothing meanwhile) until the file named on
the command line exists, or 20 s pass.  Then it prints UNBLOCKED and the
loop idles normally.
"""

import asyncio
import os
import sys
import time

from _common import exit_with_parent, ready

RELEASE = sys.argv[1]


def block_the_loop():
    deadline = time.monotonic() + 20
    # os.access is C code (no Python frame of its own, unlike os.path.exists),
    # so a stack sampled at any moment ends in this function, nearly always
    # on the sleep line
    while not os.access(RELEASE, os.F_OK) and time.monotonic() < deadline:
        time.sleep(0.05)  # LINE:block


async def blocker():
    await asyncio.sleep(0.2)  # let the agent's heartbeat get going
    ready()
    block_the_loop()  # LINE:call-block
    print("UNBLOCKED", flush=True)


async def main():
    sleepers = [asyncio.create_task(asyncio.sleep(3600), name=f"sleeper-{i}") for i in range(3)]
    await asyncio.create_task(blocker(), name="blocker")
    await asyncio.gather(*sleepers)


exit_with_parent()
asyncio.run(main())
