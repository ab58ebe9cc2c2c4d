"""Deadlocks on locks, and a lock left held by a finished task.

* "left" takes lock_a then lock_b, "right" takes lock_b then lock_a: the
  classic opposite-order deadlock.
* "selfish" awaits a lock it already holds.
* "leaker" acquires lock_c and returns without releasing it; "victim" then
  waits on lock_c forever (a heuristic finding, not a cycle).
"""

import asyncio

from _common import exit_with_parent, ready


async def left(lock_a, lock_b, both):
    async with lock_a:
        both.append(1)
        while len(both) < 2:
            await asyncio.sleep(0.01)
        async with lock_b:  # LINE:left-waits
            pass


async def right(lock_a, lock_b, both):
    async with lock_b:
        both.append(1)
        while len(both) < 2:
            await asyncio.sleep(0.01)
        async with lock_a:  # LINE:right-waits
            pass


async def selfish(lock):
    await lock.acquire()
    await lock.acquire()  # LINE:selfish-waits


async def leaker(lock):
    await lock.acquire()


async def victim(lock):
    async with lock:  # LINE:victim-waits
        pass


async def main():
    lock_a = asyncio.Lock()  # LINE:lock-a
    lock_b = asyncio.Lock()  # LINE:lock-b
    lock_s = asyncio.Lock()  # LINE:lock-s
    lock_c = asyncio.Lock()  # LINE:lock-c
    both = []
    tasks = [
        asyncio.create_task(left(lock_a, lock_b, both), name="left"),
        asyncio.create_task(right(lock_a, lock_b, both), name="right"),
        asyncio.create_task(selfish(lock_s), name="selfish"),
    ]
    leak = asyncio.create_task(leaker(lock_c), name="leaker")
    await leak
    tasks.append(asyncio.create_task(victim(lock_c), name="victim"))
    while not (lock_a._waiters and lock_b._waiters and lock_s._waiters and lock_c._waiters):
        await asyncio.sleep(0.01)
    ready()
    await asyncio.gather(*tasks)


exit_with_parent()
asyncio.run(main())
