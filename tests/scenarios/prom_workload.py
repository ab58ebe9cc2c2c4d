"""A known workload for the metrics exporters.

``main`` creates 300 tasks that finish, then one task "blocker" whose single
step blocks the loop for 200 ms (time.sleep), then prints READY and idles.
Under the agent: created 302 (main, 300, blocker), done 301, live 1, and
exactly one step between 100 ms and 250 ms.
"""

import asyncio
import time

from _common import exit_with_parent, ready

N = 300


async def ok(i):
    await asyncio.sleep(0)
    return i


async def blocker():
    time.sleep(0.2)  # LINE:block


async def main():
    await asyncio.gather(*[asyncio.create_task(ok(i)) for i in range(N)])
    await asyncio.sleep(0.1)  # the heartbeat is running
    await asyncio.create_task(blocker(), name="blocker")
    await asyncio.sleep(0.1)  # a heartbeat after the block
    ready()
    await asyncio.Event().wait()


exit_with_parent()
asyncio.run(main())
