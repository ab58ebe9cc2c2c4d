"""One named task blocks the loop with ``time.sleep(1.5)``.

Usage: health_block.py GO_FILE [asyncio|uvloop].  After READY the task
"blocker" polls (without blocking) until GO_FILE exists, prints BLOCKING,
blocks the loop for 1.5 s on the marked line, prints UNBLOCKED, and the
program then idles until killed.
"""

import asyncio
import os
import sys
import time

from _common import exit_with_parent, ready

GO = sys.argv[1]
KIND = sys.argv[2] if len(sys.argv) > 2 else "asyncio"


async def blocker():
    while not os.path.exists(GO):
        await asyncio.sleep(0.01)
    print("BLOCKING", flush=True)
    time.sleep(1.5)  # LINE:block
    print("UNBLOCKED", flush=True)


async def main():
    print("LOOP", type(asyncio.get_running_loop()).__module__, flush=True)
    task = asyncio.create_task(blocker(), name="blocker")
    await asyncio.sleep(0.2)  # let the heartbeat get going
    ready()
    await task
    await asyncio.Event().wait()


exit_with_parent()
if KIND == "uvloop":
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
