"""The agent on uvloop: tasks created once the loop runs carry creation sites."""

from __future__ import annotations

import pytest
from conftest import marker_line, parse_table, uvloop_or_skip, where

S = "uvapp.py"

@pytest.mark.uvloop
@pytest.mark.parametrize("mode", ["run", "runner"])
def test_uvloop_tasks_have_sites(ls, mode):
    uvloop_or_skip()
    prog = ls.start(S, mode)
    prog.wait_line("LOOP uvloop")
    prog.wait_line("READY")
    hello = prog.wait_agent()
    (loop,) = hello["loops"]
    assert loop["kind"].startswith("uvloop"), loop
    assert loop["running"] is True

    page = ls.ok("ps", prog.pid, "--json").json()
    tasks = {t["name"]: t for t in page["tasks"]}
    assert {"uv-worker-0", "uv-worker-1", "uv-worker-2", "uv-spawner", "uv-grandchild"} <= set(tasks)
    for i in range(3):
        t = tasks[f"uv-worker-{i}"]
        assert t["tracked"] is True
        assert t["site"].endswith(where(S, "create-workers")), t["site"]
        assert [f["function"] for f in t["stack"]] == ["Event.wait", "worker"]
        assert t["stack"][1]["lineno"] == marker_line(S, "worker-wait")
    assert tasks["uv-spawner"]["site"] == f"main {where(S, 'create-spawner')}"
    g = tasks["uv-grandchild"]
    assert g["site"] == f"spawner {where(S, 'create-grandchild')}"
    assert g["parent_name"] == "uv-spawner"
    assert [a["task_name"] for a in g["awaiters"]] == ["uv-spawner"]

    # uvloop.Loop is patched like BaseEventLoop: even the main task, created
    # before the loop runs, is tracked (its site is the first frame outside
    # asyncio: uvloop.run's own wrapper, or the Runner's caller)
    untracked = [t for t in page["tasks"] if not t["tracked"]]
    assert untracked == []
    (main,) = [t for t in page["tasks"] if "main" in [f["function"] for f in t["stack"]] and t["parent_id"] is None]
    assert main["site"] is not None

    rows = parse_table(ls.ok("ps", prog.pid, "-l").out)
    by_name = {r["task name"]: r for r in rows}
    col = by_name["uv-spawner"]["creation site"]  # clipped in the middle to 50 characters
    full = f"main {where(S, 'create-spawner')}"
    if "…" in col:
        head, _, tail = col.partition("…")
        assert len(col) == 50 and full.startswith(head) and full.endswith(tail)
    else:
        assert col == full
    assert col.endswith(f":{marker_line(S, 'create-spawner')}")
    assert by_name["uv-grandchild"]["awaiter name"] == "uv-spawner"
    assert by_name[main["name"]]["creation site"] != "?"

    info = ls.ok("inspect", prog.pid, "uv-grandchild").out
    assert f"spawner {where(S, 'create-grandchild')}" in info
    assert f"main {where(S, 'create-spawner')}" in info
    assert "created    before loopscope was installed" not in info
    stats = ls.ok("stats", prog.pid, "--json").json()
    assert "(unknown: created before loopscope)" not in {g["key"] for g in stats["groups"]}


UVLOOP_FACTORY = (
    "the agent keeps its task factory outermost by patching BaseEventLoop.set_task_factory "
    "(agent/core.py _patch); uvloop's Loop is not a BaseEventLoop, so a program that sets its own "
    "factory on a uvloop loop silently replaces the agent's: every later task is untracked "
    "(e.g. re-wrap the factory from the loop's heartbeat in agent/loops.py)"
)


@pytest.mark.parametrize(
    "mode",
    [
        "asyncio",
        pytest.param("run", marks=[pytest.mark.uvloop]),
    ],
)
def test_program_task_factory_keeps_tracking(ls, mode):
    if mode != "asyncio":
        uvloop_or_skip()
    prog = ls.start(S, mode, "factory")
    prog.wait_line("READY")
    prog.wait_agent()
    page = prog.call("tasks.graph", {"filter": {"name": "uv-*"}})
    assert len(page["tasks"]) == 5
    for t in page["tasks"]:
        assert t["tracked"] is True, t["name"]
        assert t["site"] is not None
    g = next(t for t in page["tasks"] if t["name"] == "uv-grandchild")
    assert g["site"] == f"spawner {where(S, 'create-grandchild')}"
    assert g["parent_name"] == "uv-spawner"


@pytest.mark.uvloop
def test_uvloop_async_generators_listed_and_still_finalised_by_uvloop(ls):
    """The agent's firstiter hook sits in front of uvloop's own: generators
    are listed, and uvloop still finalises them (a dropped one at once, the
    rest in shutdown_asyncgens) exactly as without the agent."""
    uvloop_or_skip()
    A = "uv_agens.py"
    outputs = []
    for agent in (True, False):
        prog = ls.start(A, agent=agent)
        prog.wait_line("READY")
        assert prog.stdout.lines[:3] == ["FINALIZED dropped", "LOOP uvloop", "READY"], prog.stdout.lines
        if agent:
            prog.wait_agent()
            ags = ls.ok("asyncgens", prog.pid, "--json").json()["asyncgens"]
            assert [(a["name"], a["state"]) for a in ags] == [("kept", "suspended")], ags
            (k,) = ags
            assert k["site"] == f"main {where(A, 'kept-first')}"
            assert f"{k['frame']['filename']}:{k['frame']['lineno']}" == where(A, "kept-yield")
            assert k["owner_name"] == "Task-1"
        prog.popen.terminate()
        assert prog.wait_exit() == 0, prog.stderr.text
        outputs.append(prog.stdout.lines)
    with_agent, bare = outputs
    assert with_agent == bare == ["FINALIZED dropped", "LOOP uvloop", "READY", "FINALIZED kept", "HOOKS None None"], outputs
