"""Eager tasks made the way aiohttp makes one per request on 3.14+,
``asyncio.create_task(coro, eager_start=True)``: loopscope makes them exact
``asyncio.Task`` objects and keeps their records beside them.

"exact-parent" creates "exact-child" inside its eager first step and waits
for it; "killer" cancels "exact-victim" with a message; "abandoned" is left
pending and dropped, so it is destroyed while pending; "clean" finishes in
its constructor.  The program prints whether every one of them is exactly
``asyncio.Task``.
"""

import asyncio
import gc

from _common import exit_with_parent, ready


async def child(ev):
    await ev.wait()  # LINE:child-wait


async def parent(ev):
    c = asyncio.create_task(child(ev), name="exact-child", eager_start=True)  # LINE:create-child
    await c


async def victim():
    await asyncio.sleep(3600)  # LINE:victim-sleep


async def killer(target):
    await asyncio.sleep(0)
    target.cancel("stop now")  # LINE:cancel-call
    try:
        await target
    except asyncio.CancelledError:
        pass


async def clean():
    return 1


async def forever():
    await asyncio.Event().wait()


async def main():
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)  # "destroyed but it is pending"
    ev = asyncio.Event()
    p = asyncio.create_task(parent(ev), name="exact-parent", eager_start=True)  # LINE:create-parent
    v = asyncio.create_task(victim(), name="exact-victim", eager_start=True)
    k = asyncio.create_task(killer(v), name="killer", eager_start=True)
    c = asyncio.create_task(clean(), name="clean", eager_start=True)
    a = asyncio.create_task(forever(), name="abandoned", eager_start=True)
    await k
    exact = all(type(t) is asyncio.Task for t in (p, v, k, c, a))
    print("exact", exact, c.done(), flush=True)
    del a, v, k, c
    gc.collect()
    ready()
    await p


exit_with_parent()
asyncio.run(main())
