"""Failed tasks: one raises and nobody retrieves it; one is retrieved.

"boom" raises ValueError('boom') and is dropped unretrieved, so asyncio must
still log "Task exception was never retrieved" when it is collected (the
agent records the failure without marking the exception retrieved).
"handled" raises KeyError and its awaiter catches it.
"""

import asyncio
import gc

from _common import exit_with_parent, ready


async def explode():
    await asyncio.sleep(0)
    raise ValueError("boom")  # LINE:raise


async def lookup():
    await asyncio.sleep(0)
    return {}["missing"]  # LINE:keyerror


async def main():
    t = asyncio.create_task(explode(), name="boom")
    while not t.done():
        await asyncio.sleep(0)
    del t
    gc.collect()
    h = asyncio.create_task(lookup(), name="handled")
    try:
        await h
    except KeyError:
        pass
    del h
    gc.collect()
    ready()
    await asyncio.Event().wait()


exit_with_parent()
asyncio.run(main())
