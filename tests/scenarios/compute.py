"""A program whose output must not change under ``loopscope run``.

It computes with tasks and prints results and event orders: gather (with
and without return_exceptions), TaskGroup results and ExceptionGroups,
exceptions propagating through awaited tasks, cancellation, shield,
wait_for, as_completed, current_task, and, on 3.12+, the same with
``asyncio.eager_task_factory``.  It prints nothing that varies from run to
run (no addresses, no timings), so two runs must print the same bytes.
"""

import asyncio
import sys

trace = []


async def square(x, delay=0.0):
    trace.append(f"start {x}")
    await asyncio.sleep(delay)
    trace.append(f"end {x}")
    return x * x


async def quiet_square(x, delay):
    await asyncio.sleep(delay)
    return x * x


async def fail(exc):
    await asyncio.sleep(0)
    raise exc


async def immediate(x):
    trace.append(f"immediate {x}")
    return x + 1


async def scenario(label):
    print(f"== {label}")
    trace.clear()
    print("gather", await asyncio.gather(*(square(i, 0.001 * (5 - i)) for i in range(5))))
    print("trace", trace)
    trace.clear()
    res = await asyncio.gather(square(2), fail(ValueError("v")), fail(KeyError("k")), return_exceptions=True)
    print("gather return_exceptions", [repr(r) for r in res])
    try:
        await asyncio.gather(square(3), fail(RuntimeError("first")))
    except RuntimeError as e:
        print("gather raises", repr(e))

    async with asyncio.TaskGroup() as tg:
        ts = [tg.create_task(square(i)) for i in range(4)]
    print("taskgroup", [t.result() for t in ts])
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fail(ValueError("a")))
            tg.create_task(fail(TypeError("b")))
            tg.create_task(square(9, 10))
    except* ValueError as eg:
        print("except* ValueError", [repr(e) for e in eg.exceptions])
    except* TypeError as eg:
        print("except* TypeError", [repr(e) for e in eg.exceptions])

    async def outer():
        return await asyncio.create_task(fail(ZeroDivisionError("deep")))

    try:
        await asyncio.create_task(outer())
    except ZeroDivisionError as e:
        print("propagated", repr(e))

    t = asyncio.create_task(square(7, 10))
    await asyncio.sleep(0)
    t.cancel("bye")
    try:
        await t
    except asyncio.CancelledError as e:
        print("cancelled", t.cancelled(), e.args)

    inner = asyncio.create_task(square(8, 0.01))
    shielded = asyncio.shield(inner)
    shielded.cancel()
    print("shield", shielded.cancelled(), await inner)

    try:
        await asyncio.wait_for(square(6, 10), timeout=0.01)
    except asyncio.TimeoutError:
        print("wait_for timed out")
    print("wait_for ok", await asyncio.wait_for(square(5), timeout=5))

    # as_completed starts its arguments in set order (by address), so only
    # the completion order is deterministic: no trace here.
    done = []
    for fut in asyncio.as_completed([quiet_square(i, 0.005 * (3 - i)) for i in range(3)]):
        done.append(await fut)
    print("as_completed", done)

    me = asyncio.current_task()
    child = asyncio.create_task(immediate(1), name="named-child")
    print("current_task is a Task", isinstance(me, asyncio.Task), "child name", child.get_name())
    coro = immediate(2)
    t2 = asyncio.create_task(coro)
    # (an eager task that already finished has no coroutine any more, and
    # asking 3.12.0/3.12.1 for it crashes the interpreter: CPython's bug)
    print("get_coro is the coroutine", "(finished eagerly)" if t2.done() else t2.get_coro() is coro)
    print("results", await child, await t2)
    print("trace", trace)
    print("all_tasks", len(asyncio.all_tasks()))


async def eager_part():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    trace.clear()
    t = asyncio.create_task(immediate(10))
    print("eager done at once", t.done(), t.result() if t.done() else None)
    t2 = asyncio.create_task(square(3, 0.001))
    trace.append("after create")
    print("eager result", await t2, trace)
    t3 = asyncio.create_task(fail(ValueError("eager")))
    try:
        t3.result()
    except asyncio.InvalidStateError:
        print("eager fail not done yet")
    try:
        await t3
    except ValueError as e:
        print("eager fail", repr(e))
    await scenario("eager")
    loop.set_task_factory(None)


class MyTask(asyncio.Task):
    pass


async def custom_factory_part():
    loop = asyncio.get_running_loop()
    calls = []

    def my_factory(loop, coro, **kwargs):
        calls.append(coro.__qualname__)
        return MyTask(coro, loop=loop, **kwargs)

    loop.set_task_factory(my_factory)
    t = asyncio.create_task(square(4), name="mine")
    print("custom factory", type(t).__name__, t.get_name(), await t, calls)
    async with asyncio.TaskGroup() as tg:
        t2 = tg.create_task(square(5))
    print("custom factory in a TaskGroup", type(t2).__name__, t2.result(), calls)
    loop.set_task_factory(None)


async def main():
    await scenario("default")
    await custom_factory_part()
    if sys.version_info >= (3, 12):
        await eager_part()
    else:
        print("== eager (not available)")


asyncio.run(main())
print("exit ok")
