"""A task created by a task created by a task: creation chains.

main (Task-1) creates "grandparent", which creates "parent", which creates
"child"; every level then waits on an Event, so all four stay alive.
main also creates "helper-made" through a plain function, so that the
creation site (the helper) differs from its caller.
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


def make_helper_task():
    return asyncio.create_task(forever.wait(), name="helper-made")  # LINE:helper-create


async def main():
    global forever
    forever = asyncio.Event()  # LINE:event
    h = make_helper_task()  # LINE:helper-call
    t = asyncio.create_task(grandparent(), name="grandparent")  # LINE:create-grandparent
    await t
    await h


exit_with_parent()
asyncio.run(main())  # LINE:run
