"""Known task counts: 500 tasks that finish, 50 that fail, 20 cancelled.

Every task is created by ``main`` (itself a task: asyncio.run's), and all
570 have ended when READY is printed; then ``main`` idles, the only live
task.  So under the agent: created 571, done 500, failed 50, cancelled 20,
live 1.  Prints the three counts it observed itself as "COUNTS ok fail cancelled".
"""

import asyncio

from _common import exit_with_parent, ready

N_OK, N_FAIL, N_CANCEL = 500, 50, 20


async def ok(i):
    await asyncio.sleep(0)
    return i


async def fail(i):
    await asyncio.sleep(0)
    raise ValueError(i)


async def forever():
    await asyncio.sleep(3600)


async def main():
    oks = [asyncio.create_task(ok(i), name=f"ok-{i}") for i in range(N_OK)]
    fails = [asyncio.create_task(fail(i), name=f"fail-{i}") for i in range(N_FAIL)]
    victims = [asyncio.create_task(forever(), name=f"victim-{i}") for i in range(N_CANCEL)]
    await asyncio.sleep(0)
    for t in victims:
        t.cancel()
    results = await asyncio.gather(*oks, *fails, *victims, return_exceptions=True)
    n_ok = sum(1 for r in results if isinstance(r, int))
    n_fail = sum(1 for r in results if isinstance(r, ValueError))
    n_cancel = sum(1 for r in results if isinstance(r, asyncio.CancelledError))
    print("COUNTS", n_ok, n_fail, n_cancel, flush=True)
    ready()
    await asyncio.Event().wait()


exit_with_parent()
asyncio.run(main())
