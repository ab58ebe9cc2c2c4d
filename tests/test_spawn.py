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
        for key, task in made.items():
            assert origin_of(task)[O_PARENT_ID] == id(me)
            # (read while installed: uninstall forgets exact tasks' records)
            assert site_line(task) == line_of(f"site: {key}"), key
        return made

    with loopscope.installed(server=False, dump_signal=""):
        made = asyncio.run(main())
    for task in made.values():
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


@pytest.mark.skipif(sys.version_info < (3, 14), reason="create_task(eager_start=...) is new in Python 3.14")
def test_loop_create_task_eager_start_is_counted_at_the_callers_line() -> None:
    """The eager fast path (aiohttp makes a task per request with
    ``create_task(coro, eager_start=True)``) counts the task like the
    factory does, and records the caller's line, from both entry points."""

    async def now() -> int:
        return 5

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counter = creation_counter(loop)
        before = counted(counter)
        a = loop.create_task(now(), eager_start=True, name="a")  # site: loop eager
        b = asyncio.create_task(now(), eager_start=True, context=contextvars.copy_context())  # site: asyncio eager
        assert counted(counter) == before + 2
        assert a.done() and b.done() and a.result() == b.result() == 5
        assert a.get_name() == "a"
        assert site_line(a) == line_of("site: loop eager")
        assert site_line(b) == line_of("site: asyncio eager")

    with loopscope.installed(server=False, dump_signal=""):
        asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_eager_clean_ends_share_the_done_rings_budget() -> None:
    """Eager tasks that finish in their constructor or in a later step are
    counted exactly and enter the done ring through its budget like every
    other clean end (a server making one per request must not pay a history
    entry for each); every failure is kept, with its coroutine's name."""

    async def immediate() -> int:
        return 1

    async def later() -> int:
        await asyncio.sleep(0)
        return 2

    async def bad() -> None:
        raise ValueError("eager failure")

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        m = current().tracker.metrics[id(loop)]
        before = (m.done, m.failed)
        for _ in range(3):
            tasks = [asyncio.create_task(immediate()) for _ in range(1000)]
            tasks += [asyncio.create_task(later()) for _ in range(500)]
            await asyncio.gather(*tasks)
        for _ in range(7):
            t = asyncio.create_task(bad())
            assert t.done()
            with pytest.raises(ValueError):
                t.result()
        return m.done - before[0], m.failed - before[1]

    with loopscope.installed(server=False, dump_signal="", history_size=100) as agent:
        done, failed = asyncio.run(main())
        assert (done, failed) == (4500, 7)
        tracker = agent.tracker
        # the ring's last 100 entries: ours, bar asyncio.run's own shutdown tasks
        names = [e[2].rsplit(".", 1)[-1] for e in tracker.done]
        assert len(names) == 100 and names.count("immediate") + names.count("later") >= 95, names
        # at most a second of refills (100 a second) besides the first 1,000
        done_total = sum(m.done for m in tracker.metrics.values())
        assert tracker.done_not_kept(done_total) >= done_total - 1000 - 100
        failed = [e for e in tracker.failed if e[5] == "failed"]
        assert len(failed) == 7 and {e[2] for e in failed} == {"test_eager_clean_ends_share_the_done_rings_budget.<locals>.bad"}, failed


def test_every_task_class_holds_asyncios_result_itself() -> None:
    """asyncio's C task_wakeup calls ``result()`` by a fresh name string on
    an awaited task that is not exactly asyncio.Task, which misses the type
    cache: each of our classes holds asyncio's own ``result`` in its own
    dict, so that lookup stops at the first class (see _make_task_classes).
    Awaiting one of our tasks still gives its result and its exception."""

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("x")

    async def main() -> tuple[list[type], int]:
        loop = asyncio.get_running_loop()
        plain = loop.create_task(work(7))
        failing = loop.create_task(fails())
        eager = plain
        if hasattr(asyncio, "eager_task_factory"):  # 3.12+: our eager class
            loop.set_task_factory(asyncio.eager_task_factory)
            eager = loop.create_task(work(8))
            loop.set_task_factory(None)
        got = await plain + (await eager if eager is not plain else 8)
        with pytest.raises(KeyError):
            await failing
        return [type(plain), type(eager), type(failing)], got

    with loopscope.installed(server=False, dump_signal=""):
        classes, got = asyncio.run(main())
        tracker = current().tracker  # type: ignore[union-attr]
        exact = tracker.exact_on
        classes += [tracker.task_class, tracker.del_task_class, tracker.eager_task_class]
    assert got == 15
    # the lazy ones (all three on 3.11) are exact asyncio.Task objects where
    # exact tasks are on (what this fix was for does not arise), the eager
    # factory's are of our class
    lazy = 3 if sys.version_info < (3, 12) else 2
    assert classes.count(asyncio.Task) == (lazy if exact else 0), classes
    for cls in classes:
        if cls is asyncio.Task:
            continue
        assert issubclass(cls, asyncio.Task)
        assert cls.__dict__["result"] is asyncio.Task.result, cls
