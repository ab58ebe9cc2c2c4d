"""Cancellation: a task cancels another with a message; wait_for times out.

"victim" sleeps; "killer" cancels it with the message "stop now" and waits
for it to finish.  "waiter" passes the task "slow-inner" to wait_for with a
short timeout, so wait_for cancels it.  Everything then idles.
"""

import asyncio
import gc

from _common import exit_with_parent, ready


async def victim():
    await asyncio.sleep(3600)  # LINE:victim-sleep


async def killer(target):
    await asyncio.sleep(0)
    target.cancel("stop now")  # LINE:cancel-call
    try:
        await target
    except asyncio.CancelledError:
        pass


async def slow():
    await asyncio.sleep(3600)  # LINE:slow-sleep


async def waiter():
    inner = asyncio.create_task(slow(), name="slow-inner")
    try:
        await asyncio.wait_for(inner, timeout=0.05)  # LINE:wait-for
    except asyncio.TimeoutError:
        pass


async def main():
    b = asyncio.create_task(victim(), name="victim")
    a = asyncio.create_task(killer(b), name="killer")
    w = asyncio.create_task(waiter(), name="waiter")
    await asyncio.gather(a, w)
    del a, b, w  # finished tasks enter the history when released
    gc.collect()
    ready()
    await asyncio.Event().wait()


exit_with_parent()
asyncio.run(main())
