"""The agent must not change what a program does or what it can observe."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PYTHON, scenario_path


def _run(ls, scenario: str, agent: bool) -> subprocess.CompletedProcess[str]:
    cmd = [PYTHON, str(scenario_path(scenario))]
    if agent:
        cmd = [PYTHON, "-m", "loopscope", "run", "--", *cmd]
    env = {k: v for k, v in ls.env.items() if k != "SCENARIO_EXIT_WITH_PARENT"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ls.base, stdin=subprocess.DEVNULL)




def test_results_identical_with_and_without_agent(ls):
    bare = _run(ls, "compute.py", agent=False)
    watched = _run(ls, "compute.py", agent=True)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.endswith("exit ok\n")
    assert "gather [0, 1, 4, 9, 16]" in bare.stdout
    assert "custom factory MyTask mine 16 ['square']" in bare.stdout
    if sys.version_info >= (3, 12):
        assert "== eager\n" in bare.stdout and "eager done at once True 11" in bare.stdout
    assert watched.returncode == bare.returncode
    assert watched.stdout == bare.stdout
    assert watched.stderr == bare.stderr == ""


def test_the_agent_was_really_there(ls):
    """The comparison above means something only if the agent ran in the program."""
    prog = ls.start_ready("chain.py")
    assert prog.wait_agent()["pid"] == prog.pid
    info = prog.call("tasks.get", {"task": "child"})
    assert info["tracked"] is True and info["creation_chain"]


def _identity(ls, agent: bool) -> dict[str, str]:
    res = _run(ls, "identity.py", agent)
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


@pytest.fixture(scope="module")
def identity_pair():
    from conftest import Harness

    h = Harness()
    try:
        yield _identity(h, False), _identity(h, True)
    finally:
        h.close()


@pytest.mark.parametrize(
    "key",
    [
        "repr_pending",
        "repr_done",
        "never_retrieved_log",
        "unnamed_task_name",
        "main_task_name",
        "task_factory",
    ],
)
def test_observable_identity(identity_pair, key):
    bare, watched = identity_pair
    assert key in bare
    assert watched[key] == bare[key]


def test_repr_shows_the_user_coroutine(identity_pair):
    """Whatever the class name, the repr names the user's coroutine, not a wrapper."""
    bare, watched = identity_pair
    assert "coro=<work() running at FILE:" in watched["repr_pending"]
    assert watched["repr_pending"].split(" name=", 1)[1] == bare["repr_pending"].split(" name=", 1)[1]
    assert watched["never_retrieved_log"].endswith("exception was never retrieved")


def test_get_coro_in_process():
    """In this process, with the agent installed: get_coro() is the user's coroutine."""
    import asyncio

    import loopscope

    async def work():
        await asyncio.sleep(0)
        return 42

    async def main():
        coro = work()
        task = asyncio.create_task(coro, name="mine")
        assert task.get_coro() is coro
        assert isinstance(task, asyncio.Task)
        assert task.get_name() == "mine"
        assert "coro=<test_get_coro_in_process.<locals>.work() running" in repr(task)
        assert await task == 42
        return task

    with loopscope.installed(server=False, dump_signal="none") as agent:
        task = asyncio.run(main())
        assert agent.tracker.origin_of(task) is not None
    # uninstalled: new loops get no factory and plain tasks
    async def plain():
        return type(asyncio.current_task()), asyncio.get_running_loop().get_task_factory()

    cls, factory = asyncio.run(plain())
    assert cls is asyncio.Task and factory is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_tasks_are_tracked(ls):
    from conftest import marker_line, where

    prog = ls.start("eager.py")
    prog.wait_line("parent started eagerly True")
    prog.wait_line("READY")
    prog.wait_agent()
    info = ls.ok("inspect", prog.pid, "eager-child", "--json").json()
    assert info["site"] == f"parent {where('eager.py', 'create-child')}"
    chain = info["creation_chain"]
    assert [(c["frames"][0]["function"], c["frames"][0]["lineno"]) for c in chain[:2]] == [
        ("parent", marker_line("eager.py", "create-child")),
        ("main", marker_line("eager.py", "create-parent")),
    ]
    assert chain[0]["parent_id"] == chain[1]["task_id"]
    rows = {t["name"]: t for t in prog.call("tasks.graph", {})["tasks"]}
    assert [f["function"] for f in rows["eager-child"]["stack"]] == ["Event.wait", "child"]
    assert [a["task_name"] for a in rows["eager-child"]["awaiters"]] == ["eager-parent"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_child_parent_name(ls):
    prog = ls.start_ready("eager.py")
    info = prog.call("tasks.get", {"task": "eager-child"})
    assert info["parent_name"] == "eager-parent"
    assert info["creation_chain"][0]["parent_name"] == "eager-parent"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_task_finished_in_create_task_is_recorded(ls):
    bare = _run(ls, "eager_done.py", agent=False)
    assert bare.returncode == 0 and bare.stdout == "done eagerly True 2\nsurvived\n", bare
    watched = _run(ls, "eager_done.py", agent=True)
    assert watched.returncode == 0, watched
    assert watched.stdout == bare.stdout
