"""The compiled eager-task constructor and finaliser (agent/_speedups.c,
"EagerInit") against the Python ones in tracker.py, which they replace
where the compiled parts are built: both must record the same things.

A server makes an eager task per request (aiohttp on 3.12+), which is why
that constructor is compiled; eager tasks are new in 3.12.
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import types
from typing import Any

import pytest

import loopscope
import loopscope.hooks
from loopscope.agent import tracker
from loopscope.agent.metrics import LoopMetrics

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")

needs_compiled = pytest.mark.skipif(
    tracker._speedups is None, reason="the compiled parts were not built here (no C compiler when loopscope was installed)"
)

_PY_INIT = "EagerTrackedTask.__init__"


def _eager(coro: Any, name: str | None = None) -> asyncio.Task:
    """An eager task the way servers make them: 3.14's eager_start, or the
    loop's eager factory before that (set by the workload)."""
    if sys.version_info >= (3, 14):
        return asyncio.create_task(coro, name=name, eager_start=True)
    return asyncio.create_task(coro, name=name)


def _workload(speedups: bool) -> dict[str, Any]:
    """Eager tasks ending every way, a child made inside an eager first
    step, hooks listening; what was recorded, without times and ids."""
    events: list[tuple[str, str]] = []
    py_inits = [0]

    def name(task: Any) -> str:
        """A task's name, asyncio's numbered ones without the number (it
        runs on from one run to the next in one process)."""
        n = task.get_name()
        return "Task-N" if re.fullmatch(r"Task-\d+", n) else n

    class Hooks:
        def task_register(self, task: Any) -> None:
            events.append(("register", name(task)))

        def task_unregister(self, task: Any) -> None:
            events.append(("unregister", name(task)))

    async def done_at_once() -> int:
        return 1

    async def suspends() -> int:
        await asyncio.sleep(0)
        return 2

    async def fails_at_once() -> None:
        raise ValueError("first step")

    async def parent() -> None:
        child = _eager(suspends(), name="child")
        await child

    async def waits_forever() -> None:
        await asyncio.Event().wait()

    def count_py_init(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code.co_qualname.endswith(_PY_INIT):
            py_inits[0] += 1

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if sys.version_info < (3, 14):
            loop.set_task_factory(asyncio.eager_task_factory)
        sys.setprofile(count_py_init)
        try:
            made = [
                _eager(done_at_once(), name="done-at-once"),  # create-done
                _eager(suspends(), name="suspends"),
                _eager(fails_at_once(), name="fails-at-once"),
                _eager(parent(), name="parent"),
                _eager(waits_forever(), name="cancelled"),
            ]
        finally:
            sys.setprofile(None)
        made[-1].cancel()
        await asyncio.gather(*made, return_exceptions=True)
        await asyncio.sleep(0.01)
        every = {t.get_name(): t for t in made}
        m = loop._loopscope_metrics
        out = {
            "records": {
                name: (
                    t._ls_code.co_name if t._ls_code is not None else None,
                    t._ls_steps,
                    t._ls_coro_name,
                    t._ls_ended,
                    t._ls_link is None,
                    t._ls_first is not None,
                    t._ls_busy > 0.0,
                )
                for name, t in every.items()
            },
            "ends": (m.done, m.failed, m.cancelled),
            "py_inits": py_inits[0],
        }
        return out

    hooks = Hooks()
    with loopscope.installed(server=False, dump_signal="", speedups=speedups) as agent:
        loopscope.hooks.add(hooks)
        try:
            out = asyncio.run(main())
        finally:
            loopscope.hooks.remove(hooks)
        out["errors"] = agent.tracker.errors
        out["history"] = sorted((re.sub(r"^Task-\d+$", "Task-N", e[1]), e[2], e[5]) for e in (*agent.tracker.failed, *agent.tracker.cancelled))
    out["events"] = events
    return out


@needs_compiled
def test_the_compiled_and_the_python_constructor_record_the_same():
    compiled, python = _workload(True), _workload(False)
    # the compiled one really ran: the Python __init__ was not called
    assert compiled.pop("py_inits") == 0
    assert python.pop("py_inits") == 6  # the five, and the child made in an eager first step
    assert compiled == python
    # and what they agree on is right
    rec = python["records"]
    # (site's function, steps, coroutine, end recorded, no parent, first step timed, busy > 0)
    assert rec["done-at-once"] == ("_eager", 1, "_workload.<locals>.done_at_once", True, False, True, True)
    assert rec["suspends"][:4] == ("_eager", 2, "_workload.<locals>.suspends", True)
    assert rec["fails-at-once"][:4] == ("_eager", 1, "_workload.<locals>.fails_at_once", True)
    assert python["ends"] == (4, 1, 1)  # done (the child's too), failed, cancelled
    assert python["errors"] == 0
    assert sorted(h[1:] for h in python["history"]) == [
        ("_workload.<locals>.fails_at_once", "failed"),
        ("_workload.<locals>.waits_forever", "cancelled"),
    ]
    # task_register before task_unregister, for a task done in its constructor too
    # task_register comes before task_unregister, for a task done in its
    # constructor too; main first, asyncio.run's two shutdown tasks last
    expected = [
        ("register", "Task-N"), ("register", "done-at-once"), ("unregister", "done-at-once"),
        ("register", "suspends"), ("register", "fails-at-once"), ("unregister", "fails-at-once"),
        ("register", "child"), ("register", "parent"), ("register", "cancelled"),
        ("unregister", "suspends"), ("unregister", "child"), ("unregister", "cancelled"), ("unregister", "parent"),
        ("unregister", "Task-N"), ("register", "Task-N"), ("unregister", "Task-N"), ("register", "Task-N"), ("unregister", "Task-N"),
    ]  # fmt: skip
    ev = python["events"]
    if sys.version_info >= (3, 14):
        assert ev == expected
    else:  # 3.12 and 3.13 name a factory-made task after its constructor
        assert [e for e, _ in ev] == [e for e, _ in expected]

@needs_compiled
def test_a_child_made_in_an_eager_first_step_records_its_eager_parent():
    async def child() -> None:
        await asyncio.sleep(0)

    async def parent() -> asyncio.Task:
        return _eager(child(), name="the-child")

    async def main() -> tuple[Any, Any]:
        if sys.version_info < (3, 14):
            asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        p = _eager(parent(), name="the-parent")
        c = await p
        await c
        return tracker.origin_of(c), id(p)

    with loopscope.installed(server=False, dump_signal=""):
        origin, parent_id = asyncio.run(main())
    assert origin[tracker.O_PARENT_ID] == parent_id
    name = origin[tracker.O_PARENT_NAME]
    assert (name[0] if isinstance(name, list) else name) == "the-parent"
    assert origin[0].co_name == "_eager"  # the site: this module's helper, called by parent()


@needs_compiled
def test_the_compiled_constructor_leaks_nothing_per_task():
    """A reference kept per task (a float, a frame, the loop) would show as
    tens of thousands of blocks after 20,000 tasks."""

    async def suspends() -> None:
        await asyncio.sleep(0)

    async def fails() -> None:
        raise ValueError

    async def main(rounds: int) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        if sys.version_info < (3, 14):
            loop.set_task_factory(asyncio.eager_task_factory)
        for _ in range(rounds):
            await asyncio.gather(*[_eager(suspends()) for _ in range(500)], *[_eager(fails()) for _ in range(500)], return_exceptions=True)

    with loopscope.installed(server=False, dump_signal="", history_size=10):
        asyncio.run(main(2))  # warm-up: caches, interned sites, the history rings
        gc.collect()
        before = sys.getallocatedblocks()
        asyncio.run(main(20))
        gc.collect()
        grown = sys.getallocatedblocks() - before
    assert grown < 4000, grown


@needs_compiled
def test_bad_arguments_to_the_compiled_parts_change_nothing():
    sp = tracker._speedups
    with pytest.raises(TypeError):
        sp.EagerInit(cls=int)  # missing everything else
    with pytest.raises(TypeError):
        sp.eager_init_install(asyncio.Task, object())  # not an EagerInit

    async def three() -> int:
        await asyncio.sleep(0)
        return 3

    with loopscope.installed(server=False, dump_signal="") as agent:
        eager_cls = agent.tracker.eager_task_class
        init = vars(eager_cls)["_ls_eager_init"]
        assert type(init) is sp.EagerInit

        class Sub(eager_cls):  # no __init__ of its own: refused, left alone
            __slots__ = ()

        probe = sp.EagerInit(
            cls=Sub,
            track_cls=agent.tracker.task_class,
            skip={},
            first_user=tracker._first_user_frame,
            current_task=tracker._current_task,
            link_of=agent.tracker.link_of,
            running_loop=asyncio._get_running_loop,
            metrics_cls=LoopMetrics,
            note_end=agent.tracker.note_end,
            clean_end=agent.tracker.clean_end,
            budget=[0],
            hooks=loopscope.hooks.HOOKS,
            note_error=agent.tracker.note_error,
            fine_limit=1e-3,
            bounds=(1.0,),
            name_cell=False,
            coro_qualname=types.CoroutineType.__dict__["__qualname__"],
            metrics={},
        )
        assert sp.eager_init_install(asyncio.Task, probe) is False
        # exact tasks are on with the agent's own: refused for another
        assert sp.exact_enable(asyncio.Task, probe, agent.tracker.exact_cancel, agent.tracker.note_error) is False

        async def main() -> tuple[int, int]:
            loop = asyncio.get_running_loop()
            sub = Sub(three(), loop=loop, eager_start=True)  # the Python __init__, inherited
            plain = asyncio.Task(three(), loop=loop, eager_start=True)  # not ours at all
            return await sub, await plain

        assert asyncio.run(main()) == (3, 3)
    assert "_ls_eager_init" not in vars(Sub)
