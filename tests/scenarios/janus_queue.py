"""janus queues (a sync/async queue pair): a full one with a blocked async
putter, an empty one with a blocked async getter, and a thread feeding a
third through its sync side."""

import asyncio
import threading

import janus

from _common import exit_with_parent, ready


async def producer(q):
    for i in range(5):
        await q.async_q.put(i)  # LINE:put-waits


async def consumer(q):
    await q.async_q.get()  # LINE:get-waits


async def main():
    full = janus.Queue(maxsize=2)  # LINE:full-janus
    empty = janus.Queue()  # LINE:empty-janus
    fed = janus.Queue()  # LINE:fed-janus
    threading.Thread(target=lambda: [fed.sync_q.put(i) for i in range(3)], daemon=True).start()
    tasks = [
        asyncio.create_task(producer(full), name="jproducer"),
        asyncio.create_task(consumer(empty), name="jconsumer"),
    ]
    while full.async_q.qsize() < 2 or fed.async_q.qsize() < 3:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    ready()
    await asyncio.sleep(3600)
    del tasks


exit_with_parent()
asyncio.run(main())
