"""Nested TaskGroups and a few async generators.

outer group (in main) -> children "worker-a" (running an inner group with
"leaf-1", "leaf-2") and "quick" (finished); async generators: "ticker" is
suspended at a yield, "reader" is running (awaiting inside __anext__), and
"done_gen" is exhausted but still referenced.

Usage: groups_gens.py [uvloop]  (the same program on a uvloop loop)"""

import asyncio
import sys

from _common import exit_with_parent, ready


async def ticker():
    n = 0
    while True:
        yield n  # LINE:ticker-yield
        n += 1


async def reader():
    yield 1
    await asyncio.sleep(3600)  # LINE:reader-sleeps
    yield 2


async def done_gen():
    yield 1


async def drive_reader(gen):
    async for _ in gen:  # LINE:reader-iter
        pass


async def worker_a(inner_started):
    async with asyncio.TaskGroup() as inner:  # LINE:inner-group
        inner.create_task(asyncio.sleep(3600), name="leaf-1")
        inner.create_task(asyncio.sleep(3600), name="leaf-2")
        inner_started.set()


async def main():
    tick = ticker()
    await tick.__anext__()  # LINE:ticker-first
    d = done_gen()
    async for _ in d:
        pass
    rd = reader()
    inner_started = asyncio.Event()
    async with asyncio.TaskGroup() as outer:  # LINE:outer-group
        outer.create_task(worker_a(inner_started), name="worker-a")
        q = outer.create_task(asyncio.sleep(0), name="quick")
        outer.create_task(drive_reader(rd), name="reader-driver")
        await inner_started.wait()
        await q
        await asyncio.sleep(0.05)
        ready()
        await asyncio.sleep(3600)


exit_with_parent()
if sys.argv[1:] == ["uvloop"]:
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
