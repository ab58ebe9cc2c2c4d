"""Tasks on a uvloop loop, started with uvloop.run or an asyncio.Runner.

Usage: uvapp.py run|runner|asyncio [factory].  uvloop's loop is not a
BaseEventLoop, so the agent finds it when it starts running; tasks created
after that carry creation sites.  "asyncio" runs the same on the default
loop; "factory" makes main install a task factory of its own first.
"""

import asyncio
import sys

if sys.argv[1] != "asyncio":
    import uvloop

from _common import exit_with_parent, ready


class MyTask(asyncio.Task):
    pass


async def worker(ev):
    await ev.wait()  # LINE:worker-wait


async def spawner(ev):
    child = asyncio.create_task(worker(ev), name="uv-grandchild")  # LINE:create-grandchild
    await child


async def main():
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    if "factory" in sys.argv[2:]:
        loop.set_task_factory(lambda loop, coro, **kw: MyTask(coro, loop=loop, **kw))
    print("LOOP", type(loop).__module__, flush=True)
    tasks = [asyncio.create_task(worker(ev), name=f"uv-worker-{i}") for i in range(3)]  # LINE:create-workers
    tasks.append(asyncio.create_task(spawner(ev), name="uv-spawner"))  # LINE:create-spawner
    for _ in range(3):
        await asyncio.sleep(0)
    ready()
    await asyncio.gather(*tasks)


exit_with_parent()
if sys.argv[1] == "runner":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
elif sys.argv[1] == "asyncio":
    asyncio.run(main())
else:
    uvloop.run(main())
