"""agent/spawn.py: asyncio.create_task and loop.create_task build our tasks
themselves when the loop's factory is ours, and behave as asyncio does
everywhere else (the end-to-end comparison of a program's output with and
without the agent is tests/test_behaviour.py)."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import base_events

import pytest

import loopscope
from loopscope.agent import spawn
from loopscope.agent.core import current
from loopscope.agent.loops import counted, creation_counter
from loopscope.agent.tracker import O_PARENT_ID, code_lineno, origin_of

original_create_task = asyncio.create_task  # bound before install, as a program may


def site_line(task: asyncio.Task) -> int:
    code, lasti = origin_of(task)[:2]
    assert code.co_filename == __file__
    return code_lineno(code, lasti)


def line_of(marker: str) -> int:
    with open(__file__) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip().endswith(f"# {marker}") and "def line_of" not in line:
                return n
    raise AssertionError(marker)


async def work(x: int = 0) -> int:
    await asyncio.sleep(0)
    return x


def test_replaced_while_installed_and_restored_after() -> None:
    with loopscope.installed(server=False, dump_signal=""):
        assert asyncio.create_task is spawn.create_task
        assert asyncio.tasks.create_task is spawn.create_task
        assert base_events.BaseEventLoop.create_task is spawn.loop_create_task
    assert asyncio.create_task is spawn.original_create_task
    assert asyncio.tasks.create_task is spawn.original_create_task
    assert base_events.BaseEventLoop.create_task is spawn.original_loop_create_task
    assert "_loopscope_fast" not in base_events.BaseEventLoop.__dict__


def test_every_way_of_making_a_task_gets_the_callers_line_and_parent() -> None:
    async def main() -> dict[str, asyncio.Task]:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert loop._loopscope_fast is not None
        made = {
            "create_task": asyncio.create_task(work()),  # site: create_task
            "bound_early": original_create_task(work()),  # site: bound_early
            "loop": loop.create_task(work()),  # site: loop
            "ensure_future": asyncio.ensure_future(work()),  # site: ensure_future
        }
        async with asyncio.TaskGroup() as tg:
            made["taskgroup"] = tg.create_task(work())  # site: taskgroup
        await asyncio.gather(*made.values())
        for task in made.values():
            assert origin_of(task)[O_PARENT_ID] == id(me)
        return made

    with loopscope.installed(server=False, dump_signal=""):
        made = asyncio.run(main())
    for key, task in made.items():
        assert site_line(task) == line_of(f"site: {key}"), key
        assert task.result() == 0


def test_names_contexts_and_errors_are_asyncio_s() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read() -> str:
        return var.get()

    async def main() -> None:
        ctx = contextvars.copy_context()
        ctx.run(var.set, "in ctx")
        named = asyncio.create_task(read(), name="named", context=ctx)
        assert named.get_name() == "named"
        assert await named == "in ctx"
        unnamed = asyncio.get_running_loop().create_task(read())
        assert unnamed.get_name().startswith("Task-")
        assert await unnamed == "unset"

    with loopscope.installed(server=False, dump_signal=""):
        asyncio.run(main())
        coro = work()
        with pytest.raises(RuntimeError, match="no running event loop"):
            asyncio.create_task(coro)
        coro.close()
        loop = asyncio.new_event_loop()
        loop.close()
        coro = work()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.create_task(coro)
        coro.close()


def test_a_program_factory_turns_the_fast_path_off_and_back() -> None:
    calls: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):  # noqa: ANN001
        calls.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ag = current()
        loop.set_task_factory(factory)
        assert loop._loopscope_fast is None
        t = asyncio.create_task(work(1))
        assert await t == 1 and calls == ["work"]
        assert ag.tracker.origin_of(t) is not None  # chained, still tracked
        assert loop.get_task_factory() is factory
        loop.set_task_factory(None)
        assert loop._loopscope_fast is not None
        before = counted(creation_counter(loop))
        t2 = asyncio.create_task(work(2))  # site: after
        assert await t2 == 2 and calls == ["work"]
        assert counted(creation_counter(loop)) == before + 1  # what tasks.delta reads
        assert site_line(t2) == line_of("site: after")

    with loopscope.installed(server=False, dump_signal=""):
        asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 14), reason="create_task(eager_start=...) is new in Python 3.14")
def test_eager_start_goes_through_the_factory() -> None:
    async def now() -> int:
        return 5

    async def main() -> None:
        t = asyncio.create_task(now(), eager_start=True)  # site: eager
        assert t.done() and t.result() == 5
        assert site_line(t) == line_of("site: eager")

    with loopscope.installed(server=False, dump_signal=""):
        asyncio.run(main())


@pytest.mark.uvloop
def test_uvloop_create_task_takes_the_fast_path_too() -> None:
    """uvloop's create_task is compiled: asyncio.create_task builds the task
    itself there too, with the caller's line, uvloop's naming (a named task
    uses up a Task-N number, as uvloop names it after making it), and the
    factory's count; a program's own factory turns it off."""
    from conftest import uvloop_or_skip

    uvloop = uvloop_or_skip()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert id(loop) in spawn._other
        counter = creation_counter(loop)
        before = counted(counter)
        first = asyncio.create_task(work(), name="named")  # site: uv
        second = asyncio.create_task(work())
        assert counted(counter) == before + 2
        assert site_line(first) == line_of("site: uv")
        assert first.get_name() == "named"
        assert int(second.get_name().split("-")[1]) >= 2
        await asyncio.gather(first, second)
        loop.set_task_factory(lambda lp, coro, **kw: asyncio.Task(coro, loop=lp, **kw))
        assert id(loop) not in spawn._other
        loop.set_task_factory(None)
        assert id(loop) in spawn._other

    with loopscope.installed(server=False, dump_signal=""):
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        with runner:
            runner.run(main())
