"""Primitives, the wait-for graph and deadlocks, task groups, async generators:
real programs under the agent, read through the real CLI (live and dumps)."""

from __future__ import annotations

import pytest
from conftest import parse_table, uvloop_or_skip, where

DL = "deadlock_locks.py"
AC = "await_cycle.py"
SQ = "stuck_queue.py"
JQ = "janus_queue.py"
GG = "groups_gens.py"


def _cycles_by_names(rep):
    return {frozenset(e["task"]["task_name"] for e in c["edges"]): c for c in rep["cycles"]}


def test_two_lock_deadlock_and_self_deadlock_json(ls):
    prog = ls.start_ready(DL)
    rep = ls.ok("deadlocks", prog.pid, "--json").json()
    cycles = _cycles_by_names(rep)
    assert set(cycles) == {frozenset({"left", "right"}), frozenset({"selfish"})}, rep["cycles"]

    pair = cycles[frozenset({"left", "right"})]
    by_task = {e["task"]["task_name"]: e for e in pair["edges"]}
    # each waits on the lock the other holds, at the line where it waits
    assert by_task["left"]["object_label"] == f"Lock (created at {where(DL, 'lock-b')})"
    assert by_task["left"]["held_by"]["task_name"] == "right"
    assert by_task["right"]["object_label"] == f"Lock (created at {where(DL, 'lock-a')})"
    assert by_task["right"]["held_by"]["task_name"] == "left"
    for name, tag in (("left", "left-waits"), ("right", "right-waits")):
        w = by_task[name]["task"]["where"]
        assert f"{w['filename']}:{w['lineno']}" == where(DL, tag)
        assert by_task[name]["task"]["for_s"] > 0
    assert pair["for_s"] is not None and pair["for_s"] > 0

    selfish = cycles[frozenset({"selfish"})]
    (edge,) = selfish["edges"]
    assert edge["held_by"]["task_id"] == edge["task"]["task_id"]
    assert "waits on a Lock it holds itself" in selfish["summary"]

    # the lock left held by a finished task is a heuristic finding, not a cycle
    (held,) = [s for s in rep["suspects"] if s["kind"] == "held-by-finished"]
    assert held["summary"].startswith("heuristic: ")
    assert f"Lock (created at {where(DL, 'lock-c')})" in held["summary"]
    assert [t["task_name"] for t in held["tasks"]] == ["leaker"] and held["tasks"][0]["state"] == "done"


def test_deadlocks_text_and_dump(ls):
    prog = ls.start_ready(DL)
    out = ls.ok("deadlocks", prog.pid).out
    assert out.count("DEADLOCK ") == 2, out
    assert f"held by task 'right'" in out and f"at {where(DL, 'left-waits')}" in out
    assert "Heuristics (possible problems, not proven deadlocks):" in out
    dump = ls.path("d.json")
    ls.ok("dump", prog.pid, "-o", dump)
    again = ls.ok("deadlocks", dump, "--json").json()
    assert set(_cycles_by_names(again)) == {frozenset({"left", "right"}), frozenset({"selfish"})}


def test_ps_and_inspect_say_who_holds_the_lock(ls):
    prog = ls.start_ready(DL)
    out = ls.ok("inspect", prog.pid, "victim").out
    line = [ln for ln in out.splitlines() if ln.startswith("  waiting on ")][0]
    assert line.startswith(f"  waiting on Lock (created at {where(DL, 'lock-c')}) held by task 'leaker' (finished without releasing it) for "), line
    assert line.endswith(" s"), line
    rows = parse_table(ls.ok("ps", prog.pid, "-l", "-w", "--filter", "name=left").out)
    assert rows and rows[0]["waiting on"].startswith(f"Lock (created at {where(DL, 'lock-b')}) held by task 'right' for "), rows


def test_primitives_list_holders_and_waiters(ls):
    prog = ls.start_ready(DL)
    prims = ls.ok("primitives", prog.pid, "--json").json()["primitives"]
    locks = {p["site"].rsplit(":", 1)[1]: p for p in prims if p["kind"] == "Lock"}
    assert len(locks) == 4, prims
    a = locks[where(DL, "lock-a").rsplit(":", 1)[1]]
    assert a["state"] == "locked" and a["locked"] is True and a["tracked"] is True
    assert [h["task_name"] for h in a["holders"]] == ["left"]
    assert [(w["task_name"], w["role"]) for w in a["waiters"]] == [("right", "acquire")]
    assert a["waiters"][0]["for_s"] > 0 and a["holders"][0]["for_s"] >= a["waiters"][0]["for_s"]
    rows = parse_table(ls.ok("primitives", prog.pid, "--kind", "Lock", "-l").out)
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"Lock"}


def test_task_awaiting_itself_through_another_task(ls):
    prog = ls.start_ready(AC)
    rep = ls.ok("deadlocks", prog.pid, "--json").json()
    (cyc,) = rep["cycles"]
    by_task = {e["task"]["task_name"]: e for e in cyc["edges"]}
    assert set(by_task) == {"ping", "pong"}
    assert by_task["ping"]["object_kind"] == "task" and by_task["ping"]["object_label"] == "task 'pong'"
    assert by_task["pong"]["object_label"] == "task 'ping'"
    for name, tag in (("ping", "ping-awaits"), ("pong", "pong-awaits")):
        w = by_task[name]["task"]["where"]
        assert f"{w['filename']}:{w['lineno']}" == where(AC, tag)
    out = ls.ok("deadlocks", prog.pid).out
    assert "awaits task 'pong'" in out and "awaits task 'ping'" in out


def test_no_deadlock_reported_without_a_cycle(ls):
    prog = ls.start_ready(SQ)
    rep = ls.ok("deadlocks", prog.pid, "--json").json()
    assert rep["cycles"] == []
    assert "no deadlock" in ls.ok("deadlocks", prog.pid).out


def test_stuck_queue_consumer(ls):
    prog = ls.start_ready(SQ)
    prims = ls.ok("primitives", prog.pid, "--json").json()["primitives"]
    by_line = {p["site"].rsplit(":", 1)[1]: p for p in prims if p.get("site")}
    stuck = by_line[where(SQ, "stuck-queue").rsplit(":", 1)[1]]
    assert stuck["kind"] == "Queue" and stuck["size"] == 0 and stuck["state"].startswith("size 0/")
    assert [(w["task_name"], w["role"]) for w in stuck["waiters"]] == [("consumer", "get")]
    full = by_line[where(SQ, "full-queue").rsplit(":", 1)[1]]
    assert full["size"] == 1 and full["maxsize"] == 1
    assert [(w["task_name"], w["role"]) for w in full["waiters"]] == [("putter", "put")]
    assert by_line[where(SQ, "busy-queue").rsplit(":", 1)[1]]["kind"] == "LifoQueue"

    rep = ls.ok("deadlocks", prog.pid, "--json").json()
    flagged = {t["task_name"] for s in rep["suspects"] if s["kind"] == "unreferenced-wait" for t in s["tasks"]}
    # the feeder still holds the busy queue: its consumer is not flagged
    assert flagged == {"consumer", "putter"}, rep["suspects"]
    (s,) = [s for s in rep["suspects"] if any(t["task_name"] == "consumer" for t in s["tasks"])]
    assert s["summary"].startswith("heuristic: ") and where(SQ, "stuck-queue") in s["summary"]
    w = s["tasks"][0]["where"]
    assert f"{w['filename']}:{w['lineno']}" == where(SQ, "consumer-waits")


# groups_gens.py on asyncio's default loop, and the same program on uvloop
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.uvloop)]


def _start_gg(ls, loop):
    if loop == "uvloop":
        uvloop_or_skip()
    prog = ls.start_ready(GG, *([loop] if loop == "uvloop" else []))
    (lp,) = ls.ok("ps", prog.pid, "--json").json()["loops"]
    assert lp["kind"].startswith("uvloop") == (loop == "uvloop"), lp
    return prog


@pytest.mark.parametrize("loop", LOOPS)
def test_nested_task_groups(ls, loop):
    prog = _start_gg(ls, loop)
    groups = ls.ok("groups", prog.pid, "--json").json()["groups"]
    assert len(groups) == 2, groups
    outer = [g for g in groups if g["site"].endswith(where(GG, "outer-group"))][0]
    inner = [g for g in groups if g["site"].endswith(where(GG, "inner-group"))][0]
    assert outer["parent_name"] == "Task-1" and outer["state"] == "open"
    kids = {c["task_name"]: c["state"] for c in outer["children"]}
    assert kids == {"worker-a": "pending", "quick": "done", "reader-driver": "pending"}, kids
    assert inner["parent_name"] == "worker-a" and inner["state"] == "closing (waiting for children)"
    assert {c["task_name"] for c in inner["children"]} == {"leaf-1", "leaf-2"}
    assert outer["age"] >= inner["age"] > 0
    tree = ls.ok("groups", prog.pid).out.splitlines()
    # the inner group hangs under the outer group's child "worker-a"
    (i_worker,) = [i for i, ln in enumerate(tree) if "(T) worker-a " in ln]
    (i_inner,) = [i for i, ln in enumerate(tree) if "[asyncio.TaskGroup]" in ln and "parent task 'worker-a'" in ln]
    assert i_inner == i_worker + 1 and tree[i_inner].index("└── ") > tree[i_worker].index("── ")


@pytest.mark.parametrize("loop", LOOPS)
def test_async_generators(ls, loop):
    prog = _start_gg(ls, loop)
    ags = {a["name"]: a for a in ls.ok("asyncgens", prog.pid, "--json").json()["asyncgens"]}
    assert {"ticker", "reader", "done_gen"} <= set(ags), ags
    t = ags["ticker"]
    assert t["state"] == "suspended" and t["owner_name"] == "Task-1"
    assert f"{t['frame']['filename']}:{t['frame']['lineno']}" == where(GG, "ticker-yield")
    assert t["site"] == f"main {where(GG, 'ticker-first')}"
    r = ags["reader"]
    assert r["state"] == "running" and r["owner_name"] == "reader-driver"
    assert f"{r['frame']['filename']}:{r['frame']['lineno']}" == where(GG, "reader-sleeps")
    assert r["site"] == f"drive_reader {where(GG, 'reader-iter')}"
    assert ags["done_gen"]["state"] == "closed" and ags["done_gen"]["frame"] is None
    rows = parse_table(ls.ok("asyncgens", prog.pid).out)
    assert {r["async generator"] for r in rows} >= {"ticker", "reader", "done_gen"}


@pytest.mark.parametrize("loop", LOOPS)
def test_dump_carries_groups_and_generators(ls, loop):
    prog = _start_gg(ls, loop)
    dump = ls.path("g.json")
    ls.ok("dump", prog.pid, "-o", dump)
    live = ls.ok("groups", prog.pid, "--json").json()["groups"]
    offline = ls.ok("groups", dump, "--json").json()["groups"]
    assert sorted(g["id"] for g in live) == sorted(g["id"] for g in offline)
    assert {a["name"] for a in ls.ok("asyncgens", dump, "--json").json()["asyncgens"]} >= {"ticker", "reader"}


def test_primitives_off_still_found_from_waiters(ls):
    prog = ls.start_ready(DL, env={"LOOPSCOPE_PRIMITIVES": "0"})
    # without the patches, locks are still found from their waiters (untracked), holders unknown
    prims = ls.ok("primitives", prog.pid, "--json").json()["primitives"]
    assert prims and all(p["tracked"] is False for p in prims)
    assert all(p["holders"] == [] and p["holders_known"] is False for p in prims if p["kind"] == "Lock"), prims


def test_janus_queues_listed_with_their_async_waiters(ls):
    pytest.importorskip("janus", reason="janus is in the test extras; this interpreter's environment lacks it")
    prog = ls.start_ready(JQ)
    prims = ls.ok("primitives", prog.pid, "--json").json()["primitives"]
    by_line = {p["site"].rsplit(":", 1)[1]: p for p in prims if p.get("site")}
    full = by_line[where(JQ, "full-janus").rsplit(":", 1)[1]]
    assert full["kind"] == "janus.Queue" and full["size"] == 2 and full["maxsize"] == 2
    assert [(w["task_name"], w["role"]) for w in full["waiters"]] == [("jproducer", "put")]
    empty = by_line[where(JQ, "empty-janus").rsplit(":", 1)[1]]
    assert empty["size"] == 0 and [(w["task_name"], w["role"]) for w in empty["waiters"]] == [("jconsumer", "get")]
    fed = by_line[where(JQ, "fed-janus").rsplit(":", 1)[1]]
    assert fed["size"] == 3 and fed["waiters"] == []
    # its internal Lock/Conditions are shown through the queue, not on their own
    assert {p["kind"] for p in prims} == {"janus.Queue"}, prims

    rows = {r["task name"]: r for r in parse_table(ls.ok("ps", prog.pid, "-l", "-w").out)}
    assert rows["jproducer"]["waiting on"] == f"janus.Queue.put (created at {where(JQ, 'full-janus')}) (size 2/2)"
    assert rows["jconsumer"]["waiting on"].startswith(f"janus.Queue.get (created at {where(JQ, 'empty-janus')})")
