"""A small service with live tasks and a history: workers on a queue, a task
group of leaves, and finished tasks that returned, failed or were cancelled.
"""

import asyncio
import gc

from _common import exit_with_parent, ready


async def worker(queue):
    await queue.get()  # LINE:worker-get


async def leaf():
    await asyncio.sleep(3600)  # LINE:leaf-sleep


async def group_owner():
    async with asyncio.TaskGroup() as tg:
        for i in range(3):
            tg.create_task(leaf(), name=f"leaf-{i}")  # LINE:create-leaf


async def quick(x):
    return x * 2


async def broken():
    raise RuntimeError("broken on purpose")  # LINE:broken-raise


async def main():
    queue = asyncio.Queue()
    workers = [asyncio.create_task(worker(queue), name=f"worker-{i}") for i in range(3)]
    owner = asyncio.create_task(group_owner(), name="owner")
    for i in range(2):
        await asyncio.create_task(quick(i), name=f"quick-{i}")
    b = asyncio.create_task(broken(), name="broken")
    try:
        await b
    except RuntimeError:
        pass
    d = asyncio.create_task(leaf(), name="doomed")
    await asyncio.sleep(0)
    d.cancel("doomed by main")  # LINE:cancel-doomed
    try:
        await d
    except asyncio.CancelledError:
        pass
    del b, d
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)
    ready()
    await asyncio.gather(*workers, owner)


exit_with_parent()
asyncio.run(main())
