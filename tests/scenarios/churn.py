"""Heavy churn: many clean completions in a burst, a few failures among
them, then idle.  Run with LOOPSCOPE_HISTORY_SIZE small, so that the burst
exceeds what the done ring keeps per second."""

import asyncio

from _common import exit_with_parent, ready


async def nop():
    pass


async def bad(i):
    raise ValueError(f"bad {i}")


async def main():
    exit_with_parent()
    for round_ in range(20):
        tasks = [asyncio.create_task(nop()) for _ in range(500)]
        tasks.append(asyncio.create_task(bad(round_), name=f"bad-{round_}"))
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # the ring earns entries back
    await asyncio.create_task(nop(), name="after-the-burst")
    ready()
    await asyncio.Event().wait()


asyncio.run(main())
