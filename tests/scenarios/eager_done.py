"""Eager tasks that finish inside create_task, then are collected (3.12+)."""

import asyncio
import gc


async def immediate(x):
    return x + 1


async def main():
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    t = asyncio.create_task(immediate(1), name="finished-eagerly")
    print("done eagerly", t.done(), t.result(), flush=True)
    del t
    gc.collect()
    print("survived", flush=True)


asyncio.run(main())
