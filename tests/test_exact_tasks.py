"""Exact tasks (agent/_speedups.c, "Exact tasks"): the tasks loopscope
makes (its factory's and ``create_task``'s, and on 3.14+ the eager tasks a
server makes per request) are exact ``asyncio.Task`` objects, with
loopscope's record kept beside them, and every reader sees them as it sees
the tasks of loopscope's own classes.  A program in another process, read
with the real CLI, then the record's life in-process: cancel, release,
uninstall."""

from __future__ import annotations

import asyncio
import gc
import linecache
import sys
from typing import Any

import pytest
from conftest import marker_line, parse_table, where

import loopscope
from loopscope.agent import tracker

pytestmark = pytest.mark.skipif(
    tracker._speedups is None, reason="the compiled parts were not built here (no C compiler when loopscope was installed)"
)
eager_start = pytest.mark.skipif(sys.version_info < (3, 14), reason="create_task(eager_start=...) is new in Python 3.14")

S = "exact_eager.py"


@pytest.fixture
def prog(ls):
    p = ls.start(S)
    p.wait_line("exact True True")  # every eager task of the program is exactly asyncio.Task
    p.wait_line("READY")
    p.wait_agent()
    return p


@eager_start
def test_ps_lists_exact_tasks_with_their_own_stacks(ls, prog):
    rows = parse_table(ls.ok("ps", prog.pid).out)
    by_name = {r["task name"]: r for r in rows}
    assert {"exact-parent", "exact-child"} <= set(by_name), rows
    assert by_name["exact-child"]["coroutine stack"] == "Event.wait -> child"
    assert by_name["exact-child"]["awaiter chain"].startswith("parent")
    assert by_name["exact-child"]["awaiter id"] == by_name["exact-parent"]["task id"]


@eager_start
def test_inspect_shows_the_creation_chain_through_an_exact_parent(ls, prog):
    info = ls.ok("inspect", prog.pid, "exact-child", "--json").json()
    assert info["site"] == f"parent {where(S, 'create-child')}"
    chain = info["creation_chain"]
    assert [(c["frames"][0]["function"], c["frames"][0]["lineno"]) for c in chain[:2]] == [
        ("parent", marker_line(S, "create-child")),
        ("main", marker_line(S, "create-parent")),
    ]
    assert chain[0]["parent_name"] == "exact-parent"
    assert info["steps"] >= 1 and info["busy"] > 0.0


@eager_start
def test_history_has_who_cancelled_an_exact_task_and_the_one_destroyed_pending(ls, prog):
    rows = {r["name"]: r for r in parse_table(ls.ok("history", prog.pid).out)}
    assert rows["exact-victim"]["state"] == "cancelled"
    assert rows["exact-victim"]["details"] == f"by killer at {where(S, 'cancel-call')} msg='stop now'"
    assert rows["abandoned"]["state"] == "destroyed-pending"
    out = ls.ok("inspect", prog.pid, "exact-victim").out
    suspended = out.split("  the task was suspended at:\n", 1)[1].splitlines()
    assert any(line.strip() == f"victim {where(S, 'victim-sleep')}" for line in suspended), out


def _each_end(exact_tasks: bool, eager: bool) -> dict[str, Any]:
    """Tasks ending every way, in-process: what the agent recorded."""

    async def clean() -> int:
        return 1

    async def suspends() -> int:
        await asyncio.sleep(0)
        return 2

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("x")

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        kw = {"eager_start": True} if eager else {}
        made = [asyncio.create_task(c(), name=n, **kw) for n, c in
                (("clean", clean), ("suspends", suspends), ("fails", fails), ("cancelled", forever))]  # fmt: skip
        await asyncio.sleep(0)
        kinds = {type(t) is asyncio.Task for t in made}
        made[-1].cancel(msg="by keyword")
        await asyncio.gather(*made, return_exceptions=True)
        lost = asyncio.create_task(forever(), name="lost", **kw)
        await asyncio.sleep(0)
        del lost
        gc.collect()
        m = loop._loopscope_metrics
        return {"exact": kinds, "ends": (m.done, m.failed, m.cancelled, m.destroyed),
                "steps": [t._ls_steps for t in made]}  # fmt: skip

    with loopscope.installed(server=False, dump_signal="", exact_tasks=exact_tasks) as agent:
        out = asyncio.run(main())
        tr = agent.tracker
        out["errors"] = tr.errors, tr.last_error
        out["history"] = sorted((e[1], e[5], e[4][4] if e[4] else None) for e in (*tr.failed, *tr.cancelled))
    return out


@pytest.mark.parametrize("eager", [pytest.param(True, marks=eager_start), False], ids=["eager", "lazy"])
def test_exact_and_subclass_tasks_record_the_same_ends(eager):
    exact, sub = _each_end(True, eager), _each_end(False, eager)
    assert exact.pop("exact") == {True}
    assert sub.pop("exact") == {False}
    assert exact == sub
    assert exact["errors"] == (0, None)
    assert exact["ends"] == (2, 1, 1, 1)  # clean and suspends; fails; cancelled; lost
    # the cancelled one's last step is the one that raised CancelledError in it
    assert exact["steps"] == [1, 2, 2, 2]
    assert exact["history"] == [("cancelled", "cancelled", "by keyword"), ("fails", "failed", None), ("lost", "destroyed-pending", None)]


def test_tasks_loopscope_did_not_make_are_left_alone():
    """asyncio.Task(...) called directly, or a program's own subclass, has no
    record: no loopscope attribute, cancel() as asyncio's."""

    class Mine(asyncio.Task):
        pass

    async def main() -> None:
        async def sleeper() -> None:
            await asyncio.sleep(3600)

        loop = asyncio.get_running_loop()
        for t in (asyncio.Task(sleeper()), Mine(sleeper(), loop=loop)):
            await asyncio.sleep(0)
            assert not hasattr(t, "_ls_link") and getattr(t, "_ls_steps", None) is None
            assert not tracker._speedups.exact_has(t)
            with pytest.raises(AttributeError):
                t._ls_cancel = []
            assert t.cancel("no record")
            with pytest.raises(asyncio.CancelledError):
                await t
            assert t.cancelled()

    with loopscope.installed(server=False, dump_signal="") as agent:
        assert agent.tracker.exact_on
        asyncio.run(main())
        assert agent.tracker.errors == 0


def test_a_wrong_cancel_call_is_asyncios_error_and_records_nothing():
    async def main() -> None:
        async def sleeper() -> None:
            await asyncio.sleep(3600)

        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        assert tracker._speedups.exact_has(t)
        with pytest.raises(TypeError):
            t.cancel("a", "b")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            t.cancel(bogus=1)  # type: ignore[call-arg]
        assert not t.cancelling() and t._ls_cancel is None
        assert t.cancel(msg="by name")
        assert t._ls_cancel[4] == "by name"
        with pytest.raises(asyncio.CancelledError):
            await t

    with loopscope.installed(server=False, dump_signal="") as agent:
        asyncio.run(main())
        assert agent.tracker.errors == 0


@eager_start
def test_an_eager_task_records_the_frame_create_task_was_called_from():
    """spawn.py's create_task tells the exact constructor its caller's frame
    (``EagerInit.at``): the site is the caller's line, and the tasks of one
    site share one int for it (``lasti_of``)."""

    async def main() -> None:
        async def quick() -> int:
            return 1

        here = sys._getframe().f_code
        made = []
        for _ in range(3):
            made.append(asyncio.create_task(quick(), eager_start=True))
        assert all(t.done() and tracker._speedups.exact_has(t) for t in made)
        assert {t._ls_code for t in made} == {here}
        assert len({id(t._ls_lasti) for t in made}) == 1
        line = next(ln for start, end, ln in here.co_lines() if start <= made[0]._ls_lasti < end)
        assert "create_task(quick(), eager_start=True)" in linecache.getline(here.co_filename, line)

    with loopscope.installed(server=False, dump_signal="") as agent:
        asyncio.run(main())
        assert agent.tracker.errors == 0


@eager_start
def test_the_exact_constructor_wants_a_frame_first_and_falls_back_to_its_caller():
    async def main() -> None:
        async def quick() -> int:
            return 1

        at = asyncio.get_running_loop()._loopscope_fast[5]
        with pytest.raises(TypeError, match="takes a frame first"):
            at()
        coro = quick()
        t = at("not a frame", coro=coro, loop=asyncio.get_running_loop(), eager_start=True)
        assert t.result() == 1 and t._ls_code is sys._getframe().f_code  # PyEval_GetFrame(): this one

    with loopscope.installed(server=False, dump_signal="") as agent:
        asyncio.run(main())
        assert agent.tracker.errors == 0


def test_uninstall_gives_asyncio_its_task_back():
    """Every name put on asyncio.Task goes, its cancel comes back, and an
    exact task made before the uninstall outlives it without its record."""
    before = dict(vars(asyncio.Task))
    kept: list[asyncio.Task] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        kept.append(asyncio.create_task(forever()))
        assert tracker._speedups.exact_has(kept[0])
        assert type(vars(asyncio.Task)["cancel"]).__name__ == "ExactCancel"

    loop = asyncio.new_event_loop()
    try:
        with loopscope.installed(server=False, dump_signal=""):
            loop.run_until_complete(main())
        assert dict(vars(asyncio.Task)) == before
        assert not tracker._speedups.exact_has(kept[0]) and not hasattr(kept[0], "_ls_link")
        kept[0].cancel()
        loop.run_until_complete(asyncio.sleep(0))
        assert kept[0].cancelled()
        kept.clear()
        gc.collect()
    finally:
        loop.close()


def test_exact_tasks_leak_nothing_per_task():
    """A reference or a record kept per task would show as tens of
    thousands of blocks after 20,000 tasks ending every way."""

    async def suspends() -> None:
        await asyncio.sleep(0)

    async def fails() -> None:
        raise ValueError

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main(rounds: int) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        for _ in range(rounds):
            kw = {"eager_start": True} if sys.version_info >= (3, 14) else {}
            ts = [asyncio.create_task(c(), **kw) for c in (suspends, fails, forever) for _ in range(300)]
            for t in ts[-300:]:
                t.cancel()
            await asyncio.gather(*ts, return_exceptions=True)
            del ts

    with loopscope.installed(server=False, dump_signal="", history_size=10):
        asyncio.run(main(2))
        gc.collect()
        before = sys.getallocatedblocks()
        asyncio.run(main(20))
        gc.collect()
        grown = sys.getallocatedblocks() - before
        listed = tracker._speedups.registry_state()[1]
    assert grown < 4000, grown
    assert listed < 50, listed
