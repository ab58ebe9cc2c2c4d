"""A task created by a task created by a task: creation chains.

main (Task-1) creates "grandparent", which creates "parent", which creates
"child"; every level then waits on an Event, so all four stay alive.
"""

import asyncio

from _common import exit_with_parent, ready

forever = None


async def child():
    ready()
    await forever.wait()  # LINE:child-wait


async def parent():
    t = asyncio.create_task(child(), name="child")  # LINE:create-child
    await t


async def grandparent():
    t = asyncio.create_task(parent(), name="parent")  # LINE:create-parent
    await t


async def main():
    global forever
    forever = asyncio.Event()
    t = asyncio.create_task(grandparent(), name="grandparent")  # LINE:create-grandparent
    await t


exit_with_parent()
asyncio.run(main())  # LINE:run
