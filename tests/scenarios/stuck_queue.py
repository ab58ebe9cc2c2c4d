"""A queue with a stuck consumer: the producer finished after two items and
nothing else references the queue, so "consumer" waits on get() forever.
A second queue ("busy") has a waiting consumer too, but "feeder" still holds
it: not flagged.  A bounded queue is full, with a blocked putter."""

import asyncio

from _common import exit_with_parent, ready



async def producer(q):
    for i in range(2):
        await q.put(i)


async def consumer(q, got):
    while True:
        item = await q.get()  # LINE:consumer-waits
        got.append(item)


async def feeder(q):
    await asyncio.sleep(3600)
    await q.put(1)


async def busy_consumer(q):
    await q.get()  # LINE:busy-waits


async def putter(q):
    await q.put("x")
    await q.put("y")  # LINE:putter-waits


def start(got):
    q = asyncio.Queue()  # LINE:stuck-queue
    busy = asyncio.LifoQueue()  # LINE:busy-queue
    full = asyncio.Queue(maxsize=1)  # LINE:full-queue
    return [
        asyncio.create_task(producer(q), name="producer"),
        asyncio.create_task(consumer(q, got), name="consumer"),
        asyncio.create_task(feeder(busy), name="feeder"),
        asyncio.create_task(busy_consumer(busy), name="busy-consumer"),
        asyncio.create_task(putter(full), name="putter"),
    ]


async def main():
    got = []
    tasks = start(got)
    while len(got) < 2 or not tasks[0].done():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    ready()
    await asyncio.sleep(3600)


exit_with_parent()
asyncio.run(main())
