"""The program from reference 002: nested coroutines, gather, a TaskGroup.

foo1 -> foo11 -> foo12 creates two tasks named foo2 and awaits them through
gather; the runner's TaskGroup holds foo1.0, foo1.1, foo1.2 and a foo2 of
its own while the runner sleeps in the group's body.
"""

import asyncio

from _common import exit_with_parent, ready


async def foo1():
    await foo11()  # LINE:foo1


async def foo11():
    await foo12()  # LINE:foo11


async def foo12():
    x = asyncio.create_task(foo2(), name="foo2")  # LINE:create-x
    x2 = asyncio.create_task(foo2(), name="foo2")
    await asyncio.gather(x2, x, return_exceptions=True)  # LINE:foo12


async def foo2():
    await asyncio.sleep(500)  # LINE:foo2


async def announce():
    # Every task has reached its await once the loop has gone round a few
    # times; asyncio runs ready callbacks in FIFO order, so this is exact.
    for _ in range(5):
        await asyncio.sleep(0)
    ready()


async def runner():
    async with asyncio.TaskGroup() as g:
        g.create_task(foo1(), name="foo1.0")  # LINE:create-foo1.0
        g.create_task(foo1(), name="foo1.1")
        g.create_task(foo1(), name="foo1.2")
        g.create_task(foo2(), name="foo2")
        await announce()
        await asyncio.sleep(1000)  # LINE:runner


exit_with_parent()
asyncio.run(runner())  # LINE:main
