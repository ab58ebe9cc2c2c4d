"""One task burns CPU in many steps, others sleep.

"burner" runs 100 steps of about 2 ms of pure computation each, then waits
forever; "idle-0".."idle-2" each wait on an event (one step).  READY once
the burner has finished its steps.
"""

import asyncio
import time

from _common import exit_with_parent, ready


def spin(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def burner(done, ev):
    for _ in range(100):
        spin(0.002)
        await asyncio.sleep(0)
    done.set()
    await ev.wait()


async def idle(ev):
    await ev.wait()


async def main():
    ev = asyncio.Event()
    done = asyncio.Event()
    idlers = [asyncio.create_task(idle(ev), name=f"idle-{i}") for i in range(3)]
    burning = asyncio.create_task(burner(done, ev), name="burner")
    await done.wait()
    ready()
    await asyncio.gather(burning, *idlers)


exit_with_parent()
asyncio.run(main())
