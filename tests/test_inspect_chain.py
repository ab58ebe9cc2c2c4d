"""inspect: a task's creation chain through its parent tasks."""

from __future__ import annotations

import pytest
from conftest import marker_line, scenario_path, where

S = "chain.py"


def test_inspect_creation_chain_text(ls):
    prog = ls.start_ready(S)
    res = ls.ok("inspect", prog.pid, "child")
    out = res.out
    assert out.startswith("task child  (0x")
    assert "  coroutine  child" in out
    assert "  state      pending" in out
    assert f"  site       parent {where(S, 'create-child')}" in out
    assert f"  waiting on Event (created at {where(S, 'event')}) (set=False)\n" in out

    chain = out.split("Created (chain through parent tasks):\n", 1)[1].splitlines()
    heads = [line for line in chain if line.startswith("  ") and not line.startswith("      ")]
    assert len(heads) == 4, out
    assert heads[0].startswith("  this task was created at ") and "by task parent (0x" in heads[0]
    assert heads[1].startswith("  parent (0x") and "by task grandparent (0x" in heads[1]
    assert heads[2].startswith("  grandparent (0x") and "by task " in heads[2]
    assert heads[3].endswith("outside any task, in:")
    # each level's frame, with the right file:line and its source line
    for head, func, tag in [
        (heads[0], "parent", "create-child"),
        (heads[1], "grandparent", "create-parent"),
        (heads[2], "main", "create-grandparent"),
        (heads[3], "<module>", "run"),
    ]:
        i = chain.index(head)
        assert chain[i + 1] == f"      {func} {where(S, tag)}", (head, chain[i + 1])
        assert f"# LINE:{tag}" in chain[i + 2]

    # the stack and the awaiter
    assert f"  child {where(S, 'child-wait')}" in out
    assert "Awaited by:\n  parent (0x" in out and "via await" in out


def test_inspect_creation_chain_json(ls):
    prog = ls.start_ready(S)
    info = ls.ok("inspect", prog.pid, "child", "--json").json()
    assert info["schema"] == 1
    chain = info["creation_chain"]
    assert [c["parent_name"] for c in chain[:3]] == ["parent", "grandparent", chain[2]["parent_name"]]
    assert chain[3]["parent_id"] is None and chain[3]["parent_name"] is None
    assert [(c["frames"][0]["function"], c["frames"][0]["lineno"]) for c in chain] == [
        ("parent", marker_line(S, "create-child")),
        ("grandparent", marker_line(S, "create-parent")),
        ("main", marker_line(S, "create-grandparent")),
        ("<module>", marker_line(S, "run")),
    ]
    for c in chain:
        assert c["frames"][0]["filename"] == str(scenario_path(S))
        assert c["truncated"] is False
    # the ids link up: each link's parent is the next link's task
    assert chain[0]["task_id"] == info["id"]
    for a, b in zip(chain, chain[1:]):
        assert a["parent_id"] == b["task_id"]
    # and they are the live tasks of those names
    page = prog.call("tasks.list", {})
    ids = {t["name"]: t["id"] for t in page["tasks"]}
    assert chain[0]["parent_id"] == ids["parent"]
    assert chain[1]["parent_id"] == ids["grandparent"]
    assert chain[2]["parent_id"] == next(t["id"] for t in page["tasks"] if t["coro"] == "main")
    assert info["parent_name"] == "parent" and info["parent_id"] == ids["parent"]


def test_inspect_by_id_and_locals(ls):
    prog = ls.start_ready(S)
    tid = next(t["id"] for t in prog.call("tasks.list", {})["tasks"] if t["name"] == "parent")
    info = ls.ok("inspect", prog.pid, tid, "--locals", "--json").json()
    assert info["name"] == "parent" and info["id"] == tid
    (frame,) = [f for f in info["stack"] if f["function"] == "parent"]
    assert "t" in frame["locals"] and "child" in frame["locals"]["t"]
    assert info["waiting_on"]["kind"] == "task" and info["waiting_on"]["description"] == "task 'child'"


def test_creation_site_is_the_create_task_caller(ls):
    prog = ls.start_ready(S)
    info = prog.call("tasks.get", {"task": "helper-made"})
    assert info["site"] == f"make_helper_task {where(S, 'helper-create')}"
    assert [f["function"] for f in info["creation_chain"][0]["frames"]] == ["make_helper_task"]


def test_creation_frames_option(ls):
    """--creation-frames 3 keeps the create_task caller's callers too."""
    prog = ls.start_ready(S, run_opts=("--creation-frames", "3"))
    info = prog.call("tasks.get", {"task": "helper-made"})
    frames = info["creation_chain"][0]["frames"]
    assert [(f["function"], f["lineno"]) for f in frames[:2]] == [
        ("make_helper_task", marker_line(S, "helper-create")),
        ("main", marker_line(S, "helper-call")),
    ]
    assert info["site"] == f"make_helper_task {where(S, 'helper-create')}"


def test_creation_frames_stop_at_the_loop(ls):
    prog = ls.start_ready(S, run_opts=("--creation-frames", "3"))
    info = prog.call("tasks.get", {"task": "helper-made"})
    frames = info["creation_chain"][0]["frames"]
    assert [f["filename"] for f in frames] == [str(scenario_path(S))] * 2, frames
