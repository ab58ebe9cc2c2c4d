"""Two tasks awaiting each other: "ping" awaits "pong", which awaits "ping"."""

import asyncio

from _common import exit_with_parent, ready

registry = {}


async def ping():
    while "pong" not in registry:
        await asyncio.sleep(0.01)
    await registry["pong"]  # LINE:ping-awaits


async def pong():
    while "ping" not in registry:
        await asyncio.sleep(0.01)
    await registry["ping"]  # LINE:pong-awaits


async def main():
    registry["ping"] = asyncio.create_task(ping(), name="ping")
    registry["pong"] = asyncio.create_task(pong(), name="pong")
    while registry["ping"]._fut_waiter is not registry["pong"] or registry["pong"]._fut_waiter is not registry["ping"]:
        await asyncio.sleep(0.01)
    ready()
    await asyncio.sleep(3600)


exit_with_parent()
asyncio.run(main())
