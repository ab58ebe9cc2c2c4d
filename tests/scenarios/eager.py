"""Tasks made by asyncio.eager_task_factory (3.12+), which run their first
step inside create_task: "eager-parent" creates "eager-child" during that
first step, before create_task has even returned."""

import asyncio

from _common import exit_with_parent, ready


async def child(ev):
    await ev.wait()  # LINE:child-wait


async def parent(ev):
    c = asyncio.create_task(child(ev), name="eager-child")  # LINE:create-child
    await c


async def main():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    ev = asyncio.Event()
    p = asyncio.create_task(parent(ev), name="eager-parent")  # LINE:create-parent
    print("parent started eagerly", not p.done(), flush=True)
    ready()
    await p


exit_with_parent()
asyncio.run(main())
