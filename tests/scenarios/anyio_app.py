"""anyio on its asyncio backend: task groups, and primitives tasks wait on.

Usage: anyio_app.py [uvloop]  (uvloop: anyio's asyncio backend on uvloop)

Task groups: "outer" (in main) with children "nester" (running the
"inner" group of "leaf-1" and "leaf-2"), "canceller" (running a group whose
scope it cancelled while its "shielded" child still runs: shutting down),
"quick" (finished) and the waiters below; "finished" has exited but is
still referenced (closed), with its finished child "finished-child".

Primitives, each with a task holding it and one waiting: an anyio Lock
("lock-holder", "lock-waiter"), a Lock made at import, outside any loop (an
anyio adapter: "adapter-holder", "adapter-waiter"), a Semaphore(1)
("sem-holder", "sem-waiter"), a CapacityLimiter(1) ("limiter-holder",
"limiter-waiter"); an Event ("event-waiter"), a Condition ("cond-waiter"),
an empty memory object stream ("receiver") and a full one ("sender"); two
Locks taken in opposite orders by "anyio-left" and "anyio-right" (a
deadlock).
"""

import sys

import anyio

from _common import exit_with_parent, ready

FOREVER = 3600
ADAPTED = anyio.Lock()  # LINE:adapter-lock


async def hold(lock, started):
    async with lock:
        started.set()
        await anyio.sleep(FOREVER)


async def wait_on(lock):
    async with lock:  # LINE:waits
        pass


async def wait_event(event):
    await event.wait()  # LINE:event-waits


async def wait_cond(cond):
    async with cond:
        await cond.wait()  # LINE:cond-waits


async def receive(rx):
    await rx.receive()  # LINE:receive-waits


async def send(tx):
    await tx.send("one")
    await tx.send("two")  # LINE:send-waits


async def both(first, second, taken):
    async with first:
        taken.append(1)
        while len(taken) < 2:
            await anyio.sleep(0.01)
        async with second:  # LINE:deadlock-waits
            pass


async def shielded():
    with anyio.CancelScope(shield=True):
        await anyio.sleep(FOREVER)


async def nester(started):
    async with anyio.create_task_group() as inner:  # LINE:inner-group
        inner.start_soon(anyio.sleep, FOREVER, name="leaf-1")  # LINE:leaf-1
        inner.start_soon(anyio.sleep, FOREVER, name="leaf-2")
        started.set()


async def cancelled_group(started):
    async with anyio.create_task_group() as tg:  # LINE:cancelled-group
        tg.start_soon(shielded, name="shielded")
        await anyio.sleep(0)
        tg.cancel_scope.cancel()
        started.set()


async def main():
    async with anyio.create_task_group() as finished:  # LINE:finished-group
        finished.start_soon(anyio.sleep, 0, name="finished-child")

    lock = anyio.Lock()  # LINE:lock
    sem = anyio.Semaphore(1)  # LINE:sem
    limiter = anyio.CapacityLimiter(1)  # LINE:limiter
    event = anyio.Event()  # LINE:event
    cond = anyio.Condition()  # LINE:cond
    tx, rx = anyio.create_memory_object_stream(1)  # LINE:full-stream
    _tx, rx_empty = anyio.create_memory_object_stream[str](1)  # LINE:empty-stream
    lock_a = anyio.Lock()  # LINE:lock-a
    lock_b = anyio.Lock()  # LINE:lock-b
    taken = []
    holders = [(lock, "lock-holder"), (ADAPTED, "adapter-holder"), (sem, "sem-holder"), (limiter, "limiter-holder")]
    started = [anyio.Event() for _ in range(len(holders) + 2)]
    async with anyio.create_task_group() as outer:  # LINE:outer-group
        for (prim, name), s in zip(holders, started):
            outer.start_soon(hold, prim, s, name=name)
        outer.start_soon(nester, started[-2], name="nester")
        outer.start_soon(cancelled_group, started[-1], name="canceller")
        outer.start_soon(anyio.sleep, 0, name="quick")
        for s in started:
            await s.wait()
        for prim, name in holders:
            outer.start_soon(wait_on, prim, name=name.replace("holder", "waiter"))
        outer.start_soon(wait_event, event, name="event-waiter")
        outer.start_soon(wait_cond, cond, name="cond-waiter")
        outer.start_soon(receive, rx_empty, name="receiver")
        outer.start_soon(send, tx, name="sender")
        outer.start_soon(both, lock_a, lock_b, taken, name="anyio-left")
        outer.start_soon(both, lock_b, lock_a, taken, name="anyio-right")
        while len(taken) < 2:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        ready()
        await anyio.sleep(FOREVER)
    del finished, rx


exit_with_parent()
anyio.run(main, backend_options={"use_uvloop": sys.argv[1:] == ["uvloop"]})
