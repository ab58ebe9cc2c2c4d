"""A small but realistic asyncio service to look at with loopscope.

It keeps a few thousand tasks alive from several creation sites: client
connections that each spawn request handlers, nested task groups for a
"batch" job, a fast producer feeding a slow consumer through a bounded queue,
periodic jobs, and a steady trickle of tasks that fail or get cancelled —
the shapes a real service has.  Run it under ``loopscope run`` (the demo
command does) and it never needs to know it is watched.
"""

from __future__ import annotations

import argparse
import asyncio
import random


async def handle_request(conn_id: int, req: int) -> str:
    await asyncio.sleep(random.uniform(5, 60))
    return f"conn {conn_id} request {req}"


async def client_connection(conn_id: int, handlers: int) -> None:
    async with asyncio.TaskGroup() as tg:
        for req in range(handlers):
            tg.create_task(handle_request(conn_id, req), name=f"conn{conn_id}-req{req}")
        await asyncio.sleep(3600)


async def accept_loop(connections: int, handlers: int) -> None:
    conns = [asyncio.create_task(client_connection(i, handlers), name=f"conn-{i}") for i in range(connections)]
    await asyncio.gather(*conns)


async def shard(job: int, part: int) -> None:
    await asyncio.sleep(3600)


async def batch_job(job: int) -> None:
    async with asyncio.TaskGroup() as outer:
        for half in range(2):
            outer.create_task(batch_half(job, half), name=f"batch{job}-half{half}")


async def batch_half(job: int, half: int) -> None:
    async with asyncio.TaskGroup() as inner:
        for part in range(5):
            inner.create_task(shard(job, half * 5 + part), name=f"batch{job}-shard{half * 5 + part}")


async def producer(queue: asyncio.Queue[int]) -> None:
    n = 0
    while True:
        await queue.put(n)
        n += 1


async def slow_consumer(queue: asyncio.Queue[int]) -> None:
    while True:
        await queue.get()
        await asyncio.sleep(0.5)


async def flaky_call(i: int) -> None:
    await asyncio.sleep(random.uniform(0.01, 0.2))
    if i % 3 == 0:
        raise ConnectionError(f"upstream refused call {i}")


async def slow_call(i: int) -> None:
    await asyncio.sleep(30)


async def churn() -> None:
    """Tasks that fail, and tasks that time out and are cancelled."""
    i = 0
    while True:
        i += 1
        task = asyncio.create_task(flaky_call(i), name=f"flaky-{i}")
        try:
            await task
        except ConnectionError:
            pass
        try:
            await asyncio.wait_for(slow_call(i), timeout=0.3)
        except TimeoutError:
            pass
        await asyncio.sleep(0.2)


async def periodic(name: str, every: float) -> None:
    while True:
        await asyncio.sleep(every)


async def main(total: int) -> None:
    connections = max(1, total // 25)
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(accept_loop(connections, 20), name="acceptor")
        for job in range(max(1, total // 200)):
            tg.create_task(batch_job(job), name=f"batch-{job}")
        tg.create_task(producer(queue), name="producer")
        tg.create_task(slow_consumer(queue), name="consumer")
        tg.create_task(churn(), name="churn")
        tg.create_task(periodic("metrics-flush", 1.0), name="metrics-flush")
        tg.create_task(periodic("heartbeat", 0.5), name="heartbeat")


def cli() -> None:
    parser = argparse.ArgumentParser(description="loopscope demo service")
    parser.add_argument("--tasks", type=int, default=3000)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.tasks))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    cli()
