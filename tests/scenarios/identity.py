"""Observable details of tasks, one ``KEY: value`` line each.

The tests run this with and without ``loopscope run`` and compare line by
line: whatever a program can see of its tasks (their repr, the
"never retrieved" log, names of unnamed tasks, the loop's task factory)
should not depend on whether it is monitored.  Addresses and paths are
normalised away.
"""

import asyncio
import gc
import io
import logging
import re


def norm(text):
    text = re.sub(r"0x[0-9a-f]+", "0xADDR", text)
    text = re.sub(r"at [^ >]+:(\d+)", r"at FILE:\1", text)
    return text


def show(key, value):
    print(f"{key}: {norm(str(value))}", flush=True)


async def work():
    await asyncio.sleep(0)
    return 1


async def boom():
    raise ValueError("never retrieved")


async def main():
    loop = asyncio.get_running_loop()
    show("task_factory", loop.get_task_factory())
    t = asyncio.create_task(work(), name="w")
    show("repr_pending", repr(t))
    await t
    show("repr_done", repr(t))
    show("unnamed_task_name", asyncio.create_task(work()).get_name())
    show("main_task_name", asyncio.current_task().get_name())

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("asyncio").addHandler(handler)
    b = asyncio.create_task(boom(), name="b")
    await asyncio.sleep(0)
    del b
    gc.collect()
    logging.getLogger("asyncio").removeHandler(handler)
    show("never_retrieved_log", log.getvalue().splitlines()[0] if log.getvalue() else "(nothing logged)")


asyncio.run(main())
