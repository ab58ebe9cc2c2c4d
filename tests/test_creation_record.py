"""The per-task creation record and the end-on-release, compiled and not.

``tracker.make_track``'s ``track`` and ``DelTrackedTask.__del__`` exist in
Python and in C (agent/_speedups.c, ``Track`` and ``TaskDel``).  They must
record the same things: the tests run a workload under both and compare,
and check that neither harms the program when its input is wrong.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import sys

import pytest

import loopscope
import loopscope.hooks
from loopscope.agent import tracker as tracker_mod
from loopscope.agent.tracker import O_DEPTH, O_PARENT, O_PARENT_NAME, O_TRUNC, code_lineno, origin_frames


@pytest.fixture(params=[True, False], ids=["compiled", "python"])
def speedups(request: pytest.FixtureRequest) -> bool:
    if request.param and tracker_mod._speedups is None:
        pytest.skip("the compiled creation record was not built here (no C compiler when loopscope was installed)")
    return request.param


def _name(name: object) -> object:
    """asyncio numbers unnamed tasks process-wide: "Task-N" from run to run."""
    if isinstance(name, list):  # an eager parent's name cell
        name = name[0]
    return "Task-N" if isinstance(name, str) and name.startswith("Task-") else name


def _site(origin: tuple | None) -> object:
    """An origin with what differs between runs (ids, times, numbers) left out."""
    if origin is None:
        return None
    frames = origin_frames(origin)
    names = tuple((frames[i].co_name, code_lineno(frames[i], frames[i + 1])) for i in range(0, len(frames), 2))
    return (names, _site(origin[O_PARENT]), _name(origin[O_PARENT_NAME]), origin[O_DEPTH], origin[O_TRUNC])


async def _leaf() -> None:
    await asyncio.sleep(0)


async def _fails() -> None:
    await asyncio.sleep(0)
    raise ValueError("fails")


async def _parent(depth: int) -> None:
    if depth:
        await asyncio.create_task(_parent(depth - 1), name=f"level-{depth - 1}")
    else:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_leaf(), name="in-group")
        await asyncio.gather(_leaf(), _leaf())  # ensure_future through gather


def _workload(speedups: bool, metrics: bool) -> dict:
    registered: list[asyncio.Task] = []

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        top = asyncio.create_task(_parent(3), name="top")
        plain = loop.create_task(_leaf(), name="by-loop")
        failing = asyncio.ensure_future(_fails())
        failing.set_name("failing")
        cancelled = asyncio.create_task(_leaf(), name="cancelled")
        cancelled.cancel()
        await asyncio.gather(top, plain, failing, cancelled, return_exceptions=True)
        every = [*registered]
        return {t.get_name(): _site(tracker_mod.origin_of(t)) for t in every if not t.get_name().startswith("Task-")}

    inst = loopscope.hooks.add(task_register=registered.append)
    try:
        with loopscope.installed(server=False, dump_signal="", metrics=metrics, speedups=speedups, max_chain=3) as agent:
            sites = asyncio.run(main())
            n_registered = len(registered)
            registered.clear()
            gc.collect()
            out = {
                "sites": sites,
                "registered": n_registered,
                "errors": agent.tracker.errors,
                "last_error": agent.tracker.last_error,
                "ended": sorted((_name(e[1]), e[5]) for e in (*agent.tracker.done, *agent.tracker.failed, *agent.tracker.cancelled)),
            }
    finally:
        loopscope.hooks.remove(inst)
    return out


@pytest.mark.parametrize("metrics", [True, False], ids=["timed", "ends-on-release"])
def test_compiled_and_python_record_the_same(metrics: bool):
    if tracker_mod._speedups is None:
        pytest.skip("the compiled creation record was not built here (no C compiler when loopscope was installed)")
    compiled, python = _workload(True, metrics), _workload(False, metrics)
    assert compiled == python
    # and what they agree on is right
    assert python["errors"] == 0, python["last_error"]
    sites = python["sites"]
    assert sites["top"][0][0][0] == "main" and sites["top"][2] == "Task-N" and sites["top"][3] == 1
    assert sites["failing"][0][0][0] == "main"
    # level-0's parent is level-1, made by level-2, made by top: cut at max_chain=3
    assert sites["level-0"][2] == "level-1" and sites["level-0"][1][2] == "level-2" and sites["level-0"][3] == 4
    assert sites["in-group"][0][0][0] == "_parent" and sites["in-group"][2] == "level-0"
    ended = dict(python["ended"])
    assert ended["failing"] == "failed" and ended["cancelled"] == "cancelled"
    # 4 at the top, 3 levels, one in the group, two through gather, and
    # asyncio.run's three (main, shutdown_asyncgens, shutdown_default_executor)
    assert python["registered"] == 13


def test_the_creation_chain_goes_through_every_ancestor(speedups: bool):
    chains: dict[str, object] = {}

    async def leaf() -> None:
        task = asyncio.current_task()
        assert task is not None
        chains[task.get_name()] = _site(tracker_mod.origin_of(task))

    async def middle() -> None:
        await asyncio.create_task(leaf(), name="leaf")

    async def main() -> None:
        await asyncio.create_task(middle(), name="middle")

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        asyncio.run(main())
    names, parent, pname, depth, _ = chains["leaf"]  # type: ignore[misc]
    assert names[0][0] == "middle" and pname == "middle" and depth == 2
    assert parent[0][0][0] == "main" and parent[2] == "Task-N"


def test_a_task_of_another_class_is_an_error_counted_not_raised(speedups: bool):
    """track() is only ever handed our tasks; if not, the program goes on."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        track = loop._loopscope_fast[2]
        track(object(), loop, sys._getframe())
        track(asyncio.ensure_future(_leaf()), loop, None)

    with loopscope.installed(server=False, dump_signal="", speedups=speedups) as agent:
        asyncio.run(main())
        assert agent.tracker.errors == 2 if speedups else agent.tracker.errors >= 1


def test_a_pending_task_released_is_still_reported_by_asyncio(speedups: bool, caplog: pytest.LogCaptureFixture):
    """The compiled __del__ chains to the C task's finaliser, which logs a
    task destroyed while pending, as without loopscope."""

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(forever(), name="forgotten")
        await asyncio.sleep(0)
        del task

    with loopscope.installed(server=False, dump_signal="", metrics=False, speedups=speedups) as agent:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()
            gc.collect()
        assert agent.tracker.errors == 0, agent.tracker.last_error
    assert any("Task was destroyed but it is pending" in r.getMessage() for r in caplog.records)


def test_no_objects_leak_per_task(speedups: bool):
    """Creating and releasing 24,000 tasks (clean, failed, with children),
    timed or ended on release, must not leave objects behind (a reference
    kept per task shows as thousands of blocks)."""

    async def nop() -> None:
        pass

    async def main(rounds: int) -> None:
        for _ in range(rounds):
            await asyncio.gather(*[asyncio.create_task(nop()) for _ in range(500)])
            await asyncio.gather(*[asyncio.create_task(_parent(0)) for _ in range(20)])
            await asyncio.gather(*[asyncio.create_task(_fails()) for _ in range(20)], return_exceptions=True)

    for metrics in (True, False):
        with loopscope.installed(server=False, dump_signal="", history_size=10, metrics=metrics, speedups=speedups):
            asyncio.run(main(2))
            gc.collect()
            before = sys.getallocatedblocks()
            asyncio.run(main(40))
            gc.collect()
            grown = sys.getallocatedblocks() - before
        assert grown < 2000, (metrics, grown)


def test_no_compiled_code_is_loaded_while_the_gil_is_off(monkeypatch: pytest.MonkeyPatch):
    """On a free-threaded interpreter running without the GIL, importing the
    extension would turn the GIL back on for the whole program: the agent
    runs the Python versions instead."""
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert tracker_mod._load_speedups() is None
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert tracker_mod._load_speedups() is tracker_mod._speedups


def test_a_library_skipped_after_its_code_was_judged_is_skipped_from_then_on(speedups: bool, tmp_path):
    """``skip_for_task_sites`` (anyio's integration) may come after tasks were
    made from the library's code, whose verdict ("the user's") is then
    cached, in Python and in the compiled walk's own table: both must forget
    it, or the library's line stays the site of every task it makes."""
    lib = tmp_path / "spawnlib"
    lib.mkdir()
    path = lib / f"spawner_{speedups}.py"  # a module of its own for each run: the skip is for good
    path.write_text("import asyncio\n\ndef spawn(coro):\n    return asyncio.get_running_loop().create_task(coro)\n")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    spawner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spawner)

    async def nop() -> None:
        pass

    async def main() -> list[str]:
        before = spawner.spawn(nop())
        for _ in range(2):  # a second task: the verdict now comes from the caches
            await spawner.spawn(nop())
        tracker_mod.skip_for_task_sites(str(lib) + "/")
        after = spawner.spawn(nop())
        again = spawner.spawn(nop())
        await asyncio.gather(before, after, again)
        return [t._ls_code.co_name for t in (before, after, again)]

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        sites = asyncio.run(main())
    assert sites == ["spawn", "main", "main"]
