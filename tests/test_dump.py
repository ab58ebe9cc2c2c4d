"""Dump files: everything a live agent shows, readable later by every command."""

from __future__ import annotations

import glob
import json
import os
import re
import signal

import pytest
from conftest import parse_table, parse_tree, wait_until, where

S = "mixed.py"
LIVE_NAMES = ["leaf-0", "leaf-1", "leaf-2", "owner", "worker-0", "worker-1", "worker-2"]  # and main


@pytest.fixture
def mixed(ls):
    return ls.start_ready(S)


def _dump(ls, prog) -> str:
    path = ls.path("snap.json")
    res = ls.ok("dump", prog.pid, "-o", path)
    assert res.out == ""
    assert res.err.strip() == f"wrote {path}: 8 live tasks, 4 finished"
    return path


def _names(page):
    return sorted(t["name"] for t in page["tasks"])


def test_dump_file_format(ls, mixed):
    path = _dump(ls, mixed)
    with open(path) as f:
        data = json.load(f)
    assert data["format"] == "loopscope-dump" and data["schema"] == 1
    assert data["hello"]["pid"] == mixed.pid
    assert sorted(t["name"] for t in data["tasks"] if t["coro"] != "main") == LIVE_NAMES
    assert sorted((t["name"], t["state"]) for t in data["history"]) == [
        ("broken", "failed"),
        ("doomed", "cancelled"),
        ("quick-0", "done"),
        ("quick-1", "done"),
    ]
    # a dump has every task in detail, with source lines
    w0 = next(t for t in data["tasks"] if t["name"] == "worker-0")
    assert w0["stack"][-1]["source"] == "await queue.get()  # LINE:worker-get"
    assert w0["creation_chain"]


def test_dump_reads_like_live(ls, mixed):
    path = _dump(ls, mixed)
    for args in (["ps"], ["pstree"], ["ps", "--filter", "name=leaf-*"], ["ps", "--sort", "name", "--limit", "4"]):
        live = ls.ok(*args[:1], mixed.pid, *args[1:], "--json").json()
        dump = ls.ok(*args[:1], path, *args[1:], "--json").json()
        assert _names(live) == _names(dump), args
        assert [t["id"] for t in live["tasks"]] == [t["id"] for t in dump["tasks"]], args
        assert (live["total"], live["matched"]) == (dump["total"], dump["matched"]), args
        for a, b in zip(live["tasks"], dump["tasks"]):
            assert [(f["function"], f["lineno"]) for f in a["stack"]] == [(f["function"], f["lineno"]) for f in b["stack"]]
            assert [(w["task_id"], w["via"]) for w in a["awaiters"]] == [(w["task_id"], w["via"]) for w in b["awaiters"]]
            assert (a["site"], a["state"], a["parent_id"]) == (b["site"], b["state"], b["parent_id"])

    # the text views: identical but for the "(read from dump …)" line
    for cmd in ("ps", "pstree"):
        live = ls.ok(cmd, mixed.pid)
        dump = ls.ok(cmd, path)
        assert live.out == dump.out, cmd
        assert dump.err.startswith("(read from dump snap.json, taken ")
    tree = parse_tree(ls.ok("pstree", path).out)
    assert {n.text for n in tree.find(lambda n: n.text.startswith("(T) leaf-"))} == {"(T) leaf-0", "(T) leaf-1", "(T) leaf-2"}

    # history: the same rows, on both
    for flag in ([], ["--failed"], ["--cancelled"], ["--done"]):
        live = parse_table(ls.ok("history", mixed.pid, *flag).out)
        dump = parse_table(ls.ok("history", path, *flag).out)
        assert live == dump, flag
    rows = {r["name"]: r for r in parse_table(ls.ok("history", path).out)}
    assert set(rows) == {"broken", "doomed", "quick-0", "quick-1"}
    assert rows["broken"]["details"] == "RuntimeError: broken on purpose"
    # (the details column is clipped at 70 characters)
    assert re.match(rf"by \S+ at {re.escape(where(S, 'cancel-doomed'))} msg='doomed", rows["doomed"]["details"])

    # stats: same groups and counts (ages differ: the dump's are frozen)
    for by in ("site", "name", "coro", "state"):
        live = ls.ok("stats", mixed.pid, "--by", by, "--json").json()
        dump = ls.ok("stats", path, "--by", by, "--json").json()
        assert [(g["key"], g["count"]) for g in live["groups"]] == [(g["key"], g["count"]) for g in dump["groups"]], by
        assert live["total"] == dump["total"] == 8

    # inspect: a live task and a finished one
    for name in ("worker-1", "doomed", "broken"):
        live = ls.ok("inspect", mixed.pid, name, "--json").json()
        dump = ls.ok("inspect", path, name, "--json").json()
        for key in ("id", "name", "coro", "state", "site", "parent_id", "cancel", "outcome"):
            assert live[key] == dump[key], (name, key)
        assert live["creation_chain"] == dump["creation_chain"], name
        if live["stack"] is not None:
            assert live["stack"] == dump["stack"]
    text = ls.ok("inspect", path, "doomed").out
    assert "message 'doomed by main'" in text


def test_dump_default_file_name(ls, mixed):
    res = ls.ok("dump", mixed.pid)
    (path,) = glob.glob(os.path.join(ls.base, f"loopscope-{mixed.pid}-*.json"))
    assert re.fullmatch(rf"loopscope-{mixed.pid}-\d{{8}}-\d{{6}}\.json", os.path.basename(path))
    assert res.err.startswith(f"wrote {os.path.basename(path)}: ")
    assert _names(ls.ok("ps", path, "--json").json()) == _names(ls.ok("ps", mixed.pid, "--json").json())


def test_signal_dump(ls, mixed):
    os.kill(mixed.pid, signal.SIGUSR1)
    pattern = os.path.join(ls.sockdir, f"loopscope-{mixed.pid}-*.json")
    (path,) = wait_until(lambda: glob.glob(pattern), timeout=10, what="the signal dump file")
    mixed.stderr.wait_line(f"loopscope: dump written to {path}", timeout=10)
    res = ls.ok("ps", path)
    assert sorted({r["task name"] for r in parse_table(res.out)}) == sorted(set(_names(ls.ok("ps", mixed.pid, "--json").json())))
    assert res.err.startswith(f"(read from dump {os.path.basename(path)}, taken ")
    assert not glob.glob(os.path.join(ls.sockdir, "*.tmp*"))  # written atomically
    # the program did not notice
    assert mixed.alive()
    assert len(mixed.call("tasks.list", {})["tasks"]) == 8


def test_dump_signal_disabled(ls):
    prog = ls.start_ready(S, run_opts=("--dump-signal", "none"))
    # SIGUSR1 keeps its default action (terminate) when dumps are off
    os.kill(prog.pid, signal.SIGUSR1)
    assert prog.wait_exit(10) == -signal.SIGUSR1
    assert not glob.glob(os.path.join(ls.sockdir, "loopscope-*.json"))


def test_stats_text(ls, mixed):
    res = ls.ok("stats", mixed.pid, "--by", "site")
    rows = parse_table(res.out)
    assert res.err.strip() == "(8 live tasks)"
    counts = {r["site"]: int(r["tasks"]) for r in rows}
    assert counts[f"group_owner {where(S, 'create-leaf')}"] == 3
    assert sum(counts.values()) == 8
    assert [int(r["tasks"]) for r in rows] == sorted((int(r["tasks"]) for r in rows), reverse=True)
    rows = parse_table(ls.ok("stats", mixed.pid, "--by", "coro", "--limit", "2").out)
    assert [(r["coro"], r["tasks"]) for r in rows] == [("leaf", "3"), ("worker", "3")]
