"""agent/integrations.py: a library module that builds ``asyncio.Task``
itself (aiohttp's web_protocol) sees a view of asyncio whose ``Task`` is
the tracked class, and which costs its code nothing more per ``asyncio.X``."""

from __future__ import annotations

import asyncio
import dis
import types

from loopscope.agent import integrations


def make_library() -> types.ModuleType:
    """A stand-in for aiohttp.web_protocol: a module that uses ``asyncio.X``."""
    lib = types.ModuleType("aiohttp.web_protocol")
    exec(
        "import asyncio\n"
        "def per_request():\n"
        "    return asyncio.Task, asyncio.current_task, asyncio.CancelledError\n",
        lib.__dict__,
    )
    return lib


class Tracked(asyncio.Task):
    pass


def test_view_has_the_tracked_task_and_everything_else_from_asyncio() -> None:
    lib = make_library()
    assert integrations.patch_module(lib, Tracked)
    view = lib.asyncio
    assert view.Task is Tracked
    assert view.current_task is asyncio.current_task
    assert view.sleep is asyncio.sleep
    assert lib.per_request()[0] is Tracked
    assert not integrations.patch_module(lib, Tracked), "a view is not wrapped twice"
    integrations.unpatch_module(lib)
    assert lib.asyncio is asyncio


def test_attribute_loads_on_the_view_are_specialized() -> None:
    """CPython specializes ``module.name`` only on an exact module with no
    module ``__getattr__``: the view must be one, or every ``asyncio.X`` in
    the library's hot code is a generic lookup."""
    lib = make_library()
    integrations.patch_module(lib, Tracked)
    for _ in range(200):  # past the adaptive counters' warm-up
        lib.per_request()
    ops = [i.opname for i in dis.get_instructions(lib.per_request, adaptive=True) if i.opname.startswith("LOAD_ATTR")]
    assert len(ops) == 3 and all(op == "LOAD_ATTR_MODULE" for op in ops), ops
