"""ps and pstree on the program from reference 002.

Each task must show its *own* coroutine stack and, separately, the chain of
the task awaiting it; pstree nests tasks under the frame that awaits them.
"""

from __future__ import annotations

import sys

import pytest
from conftest import marker_line, parse_table, parse_tree, scenario_path, where

S = "nested.py"


@pytest.fixture
def nested(ls):
    return ls.start_ready(S)


def test_ps_shows_own_stack_and_awaiter_chain(ls, nested):
    res = ls.ok("ps", nested.pid)
    rows = parse_table(res.out)
    by_name: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_name.setdefault(r["task name"], []).append(r)
    main_id = {r["task id"] for r in rows if r["coroutine stack"] == "sleep -> runner"}
    assert len(main_id) == 1, res.out
    (main_id,) = main_id
    (main,) = [r for r in rows if r["task id"] == main_id]
    assert main["awaiter chain"] == "" and main["awaiter id"] == "0x0"

    ids_of = {name: {r["task id"] for r in rs} for name, rs in by_name.items()}
    assert sorted(by_name) == sorted({"foo1.0", "foo1.1", "foo1.2", "foo2", main["task name"]})
    assert len(ids_of["foo2"]) == 7  # two per foo1.N plus the group's own

    for n in range(3):
        (row,) = by_name[f"foo1.{n}"]
        assert row["coroutine stack"] == "foo12 -> foo11 -> foo1"
        assert row["awaiter chain"] == "sleep -> runner"
        assert row["awaiter id"] == main_id
        assert row["awaiter name"] == main["task name"]

    foo2_rows = by_name["foo2"]
    assert len(foo2_rows) == 7
    for row in foo2_rows:
        assert row["coroutine stack"] == "sleep -> foo2", row
    nested_rows = [r for r in foo2_rows if r["awaiter name"].startswith("foo1.")]
    assert len(nested_rows) == 6
    for row in nested_rows:
        assert row["awaiter chain"] == "foo12 -> foo11 -> foo1", row
        assert row["awaiter id"] == next(iter(ids_of[row["awaiter name"]]))
    assert sorted(r["awaiter name"] for r in nested_rows) == ["foo1.0", "foo1.0", "foo1.1", "foo1.1", "foo1.2", "foo1.2"]
    (group_foo2,) = [r for r in foo2_rows if r["awaiter id"] == main_id]
    assert group_foo2["awaiter chain"] == "sleep -> runner"


def test_main_task_is_task_1(ls, nested):
    page = nested.call("tasks.graph", {})
    (main,) = [t for t in page["tasks"] if t["coro"] == "runner"]
    assert main["name"] == "Task-1"
    rows = parse_table(ls.ok("ps", nested.pid).out)
    assert {r["awaiter name"] for r in rows if r["task name"].startswith("foo1.")} == {"Task-1"}


def test_ps_long_columns(ls, nested):
    rows = parse_table(ls.ok("ps", nested.pid, "-l", "--sort", "name", "--filter", "name=foo*").out)
    assert [r["task name"] for r in rows] == ["foo1.0", "foo1.1", "foo1.2"] + ["foo2"] * 7
    rev = parse_table(ls.ok("ps", nested.pid, "--sort=-name", "--limit", "2").out)
    assert [r["task name"] for r in rev] == ["foo2", "foo2"]
    for r in rows:
        assert r["state"] == "pending", r
        assert r["age"].endswith(("ms", "s")), r
    # the creation site column names the function and file of the create_task call
    (f10,) = [r for r in rows if r["task name"] == "foo1.0"]
    full = f"runner {where(S, 'create-foo1.0')}"
    site = f10["creation site"]
    if len(full) <= 50:
        assert site == full
    else:  # clipped in the middle to 50, so that the function and the :line stay visible
        assert len(site) == 50 and site.count("…") == 1, site
        head, tail = site.split("…")
        assert full.startswith(head) and full.endswith(tail) and head.startswith("runner /"), site
        assert tail.endswith(f"nested.py:{where(S, 'create-foo1.0').rsplit(':', 1)[1]}"), site
    # -w never clips: the whole site, even from a deep checkout
    wide = parse_table(ls.ok("ps", nested.pid, "-l", "-w", "--filter", "name=foo1.0").out)
    assert [r["creation site"] for r in wide] == [full]


def test_ps_reverse_sort_as_separate_argument(ls, nested):
    rev = parse_table(ls.ok("ps", nested.pid, "--sort", "-name", "--limit", "2").out)
    assert [r["task name"] for r in rev] == ["foo2", "foo2"]


def test_ps_limit_and_count_banner(ls, nested):
    res = ls.ok("ps", nested.pid, "--limit", "3")
    assert len(parse_table(res.out)) == 3
    assert "(3 shown, 11 matched, 11 live tasks)" in res.err


def test_ps_filter(ls, nested):
    res = ls.ok("ps", nested.pid, "--filter", "name=foo1.*")
    assert sorted(r["task name"] for r in parse_table(res.out)) == ["foo1.0", "foo1.1", "foo1.2"]
    res = ls.ok("ps", nested.pid, "--filter", "coro=foo2", "state=pending")
    assert {r["task name"] for r in parse_table(res.out)} == {"foo2"}
    assert len(parse_table(res.out)) == 7


def test_ps_json(ls, nested):
    page = ls.ok("ps", nested.pid, "--json").json()
    assert page["schema"] == 1
    assert page["total"] == page["matched"] == 11
    names = sorted(t["name"] for t in page["tasks"])
    assert names.count("foo2") == 7 and names.count("foo1.1") == 1
    by_id = {t["id"]: t for t in page["tasks"]}
    foo2_line = marker_line(S, "foo2")
    for t in page["tasks"]:
        if t["name"] != "foo2":
            continue
        # own stack, innermost first: asyncio's sleep, then foo2 at its await
        assert [f["function"] for f in t["stack"]] == ["sleep", "foo2"]
        assert t["stack"][1]["filename"] == str(scenario_path(S))
        assert t["stack"][1]["lineno"] == foo2_line
        assert t["waiting_on"]["kind"] == "sleep"
        (aw,) = t["awaiters"]
        assert aw["task_id"] in by_id
        assert aw["via"] in ("gather", "taskgroup"), aw
        if by_id[aw["task_id"]]["name"].startswith("foo1."):
            assert aw["via"] == "gather"
            assert t["site"].startswith("foo12 ")
            assert t["parent_name"] == by_id[aw["task_id"]]["name"]
    f10 = next(t for t in page["tasks"] if t["name"] == "foo1.0")
    assert [(f["function"], f["lineno"]) for f in f10["stack"]] == [
        ("foo12", marker_line(S, "foo12")),
        ("foo11", marker_line(S, "foo11")),
        ("foo1", marker_line(S, "foo1")),
    ]
    assert f10["awaiters"][0]["via"] == "taskgroup"
    assert f10["waiting_on"]["kind"] == "gather"
    assert f10["waiting_on"]["description"] == "gather of 2 (0 done)"


def test_pstree_nesting(ls, nested):
    res = ls.ok("pstree", nested.pid)
    tree = parse_tree(res.out)
    (main,) = tree.children
    assert main.text.startswith("(T) ")
    # runner's own frames, outermost first, then its children under the sleep
    (runner,) = main.children
    assert runner.text == f"runner {where(S, 'runner')}"
    (sleep,) = runner.children
    assert sleep.text.startswith("sleep ") and "asyncio" in sleep.text
    kids = [c.text for c in sleep.children]
    assert kids == ["(T) foo1.0", "(T) foo1.1", "(T) foo1.2", "(T) foo2"]  # oldest first
    for n in range(3):
        (node,) = [c for c in sleep.children if c.text == f"(T) foo1.{n}"]
        (f1,) = node.children
        assert f1.text == f"foo1 {where(S, 'foo1')}"
        (f11,) = f1.children
        assert f11.text == f"foo11 {where(S, 'foo11')}"
        (f12,) = f11.children
        assert f12.text == f"foo12 {where(S, 'foo12')}"
        assert [c.text for c in f12.children] == ["(T) foo2", "(T) foo2"]
        for leaf in f12.children:
            (own,) = leaf.children
            assert own.text == f"foo2 {where(S, 'foo2')}"
            (sl,) = own.children
            assert sl.text.startswith("sleep ") and sl.children == []
    (top_foo2,) = [c for c in sleep.children if c.text == "(T) foo2"]
    assert [c.text for c in top_foo2.children] == [f"foo2 {where(S, 'foo2')}"]


def test_pstree_text_order(ls, nested):
    """The plain-text reading of the same: foo1.0, then foo12, then a foo2 beneath with its sleep."""
    out = ls.ok("pstree", nested.pid).out
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.endswith("(T) foo1.0"))
    j = next(j for j in range(i, len(lines)) if "foo12 " in lines[j])
    k = next(k for k in range(j, len(lines)) if lines[k].endswith("(T) foo2"))
    assert lines[k].index("(T)") > lines[j].index("foo12")
    assert "foo2 " in lines[k + 1] and "sleep " in lines[k + 2]


def test_pstree_json(ls, nested):
    page = ls.ok("pstree", nested.pid, "--json").json()
    assert page["schema"] == 1
    assert len(page["tasks"]) == 11


DUMP_AWAITER_STACKS = (
    "a dump stores awaiters without their stacks (build_snapshot: awaiter_stacks=False) and "
    "DumpSource.graph returns only the page, so render.ps finds no stack for an awaiter left off "
    "the page by --filter/--limit: the awaiter chain column is blank (client/source.py "
    "DumpSource.graph should fill aw['stack'] from the snapshot's task of that id)"
)


@pytest.mark.parametrize("source", ["live", "dump"])
def test_ps_awaiter_chain_when_awaiter_is_filtered_out(ls, nested, source):
    target = nested.pid
    if source == "dump":
        target = ls.path("nested.json")
        ls.ok("dump", nested.pid, "-o", target)
    rows = parse_table(ls.ok("ps", target, "--filter", "name=foo2").out)
    nested_rows = [r for r in rows if r["awaiter name"].startswith("foo1.")]
    assert len(nested_rows) == 6
    assert {r["awaiter chain"] for r in nested_rows} == {"foo12 -> foo11 -> foo1"}
