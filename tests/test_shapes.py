"""Await cycles (deadlocks), async generators, and what parked tasks wait on."""

from __future__ import annotations

import re

import pytest
from conftest import marker_line, parse_table, where

S = "shapes.py"


@pytest.fixture
def shapes(ls):
    return ls.start_ready(S)


def test_await_cycle_is_reported(ls, shapes):
    rows = {r["task name"]: r for r in parse_table(ls.ok("ps", shapes.pid).out)}
    assert (rows["A"]["awaiter name"], rows["A"]["awaiter id"]) == ("B", rows["B"]["task id"])
    assert (rows["B"]["awaiter name"], rows["B"]["awaiter id"]) == ("A", rows["A"]["task id"])
    assert rows["A"]["coroutine stack"] == "a_fn" and rows["A"]["awaiter chain"] == "b_fn"

    out = ls.ok("pstree", shapes.pid).out
    a, b = rows["A"]["task id"], rows["B"]["task id"]
    cycles = [line for line in out.splitlines() if line.startswith("await cycle: ")]
    assert len(cycles) == 1, out
    assert cycles[0] in (f"await cycle: A ({a}) → B ({b}) → A ({a})", f"await cycle: B ({b}) → A ({a}) → B ({b})")
    assert re.search(r"\(T\) [AB]  ↺ await cycle$", out, re.M)
    assert f"a_fn {where(S, 'a-awaits-b')}" in out and f"b_fn {where(S, 'b-awaits-a')}" in out

    info = ls.ok("inspect", shapes.pid, "A", "--json").json()
    assert info["waiting_on"] == {"kind": "task", "description": "task 'B'", "task_id": b, "deadline_in": None, "object_id": None, "holder_id": None}
    assert [(w["task_name"], w["via"]) for w in info["awaiters"]] == [("B", "await")]


def test_async_generator_frames_in_stack(ls, shapes):
    info = ls.ok("inspect", shapes.pid, "agen-consumer", "--json").json()
    assert [(f["function"], f["lineno"]) for f in info["stack"][1:]] == [
        ("ticks", marker_line(S, "agen-sleep")),
        ("consumer", marker_line(S, "async-for")),
    ]
    assert info["stack"][0]["function"] == "sleep"


def _expected_waits() -> dict[str, tuple[str, str]]:
    # the agent names each primitive's creation site and, for locks and
    # semaphores, the task holding it ("held by task 'holder' for 1.2 s")
    one, two = where(S, "prims-1"), where(S, "prims-2")
    return {
        "holder": ("condition", f"Condition (created at {one})"),
        "lock-waiter": ("lock", f"Lock (created at {one}) held by task 'holder' for "),
        "sem-waiter": ("semaphore", f"Semaphore (created at {one}) held by task 'holder' for "),
        "queue-waiter": ("queue.get", f"Queue.get (created at {two}) (size 0/∞)"),
        "event-waiter": ("event", f"Event (created at {two}) (set=False)"),
        "sleeper": ("sleep", "sleep(3600)"),
    }


def test_waiting_on_primitives(ls, shapes):
    page = shapes.call("tasks.graph", {})
    waits = {t["name"]: t["waiting_on"] for t in page["tasks"]}
    for name, (kind, desc) in _expected_waits().items():
        if desc.endswith(" for "):
            assert waits[name]["kind"] == kind and waits[name]["description"].startswith(desc), waits[name]
            assert re.fullmatch(r"\d+\.\d s", waits[name]["description"][len(desc):]), waits[name]
            continue
        assert (waits[name]["kind"], waits[name]["description"]) == (kind, desc), name
    assert 3590 < waits["sleeper"]["deadline_in"] <= 3600
    text = ls.ok("inspect", shapes.pid, "sleeper").out
    assert re.search(r"^  waiting on sleep\(3600\) \(fires in (59\.\d|60\.0)m\)$", text, re.M), text


def test_waiting_on_barrier(shapes):
    info = shapes.call("tasks.get", {"task": "barrier-waiter"})
    assert info["waiting_on"]["kind"] == "barrier"
    assert info["waiting_on"]["description"] == f"Barrier (created at {where(S, 'prims-2')}) (1/3)"


def test_waiting_on_inside_async_generator(shapes):
    info = shapes.call("tasks.get", {"task": "agen-consumer"})
    assert info["waiting_on"]["kind"] == "sleep"
    assert info["waiting_on"]["description"] == "sleep(3600)"
