"""Shapes a monitor must recognise: an await cycle (deadlock), an async
generator, and tasks parked on each synchronisation primitive."""

import asyncio

from _common import exit_with_parent, ready

tasks = {}


async def a_fn():
    await tasks["B"]  # LINE:a-awaits-b


async def b_fn():
    await tasks["A"]  # LINE:b-awaits-a


async def ticks():
    while True:
        await asyncio.sleep(3600)  # LINE:agen-sleep
        yield 1


async def consumer():
    async for _ in ticks():  # LINE:async-for
        pass


async def hold(lock, sem, cond):
    await lock.acquire()
    await sem.acquire()
    async with cond:
        await cond.wait()  # LINE:cond-wait


async def main():
    lock, sem, cond = asyncio.Lock(), asyncio.Semaphore(1), asyncio.Condition()  # LINE:prims-1
    queue, event, barrier = asyncio.Queue(), asyncio.Event(), asyncio.Barrier(3)  # LINE:prims-2
    tasks["A"] = asyncio.create_task(a_fn(), name="A")
    tasks["B"] = asyncio.create_task(b_fn(), name="B")
    others = [
        asyncio.create_task(consumer(), name="agen-consumer"),
        asyncio.create_task(hold(lock, sem, cond), name="holder"),
        asyncio.create_task(lock.acquire(), name="lock-waiter"),
        asyncio.create_task(sem.acquire(), name="sem-waiter"),
        asyncio.create_task(queue.get(), name="queue-waiter"),
        asyncio.create_task(event.wait(), name="event-waiter"),
        asyncio.create_task(barrier.wait(), name="barrier-waiter"),
        asyncio.create_task(asyncio.sleep(3600), name="sleeper"),
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    ready()
    await asyncio.gather(*others)


exit_with_parent()
asyncio.run(main())
