"""Unit tests of the pure parts: query, model, protocol, config, render, run env."""

from __future__ import annotations

import json
import os
import re

import pytest

from loopscope import protocol
from loopscope.agent import config
from loopscope.cli import render
from loopscope.cli.run import agent_environment
from loopscope.model import (
    DUMP_FORMAT,
    SCHEMA_VERSION,
    Awaiter,
    CancelRecord,
    CreationLink,
    Frame,
    Hello,
    LoopInfo,
    Outcome,
    SchemaError,
    Site,
    Snapshot,
    TaskInfo,
    WaitTarget,
    from_json,
    to_json,
)
from loopscope.query import QueryError, TaskFilter, group, parse_duration, parse_sort, select, select_history


def info(name: str, age: float | None = 1.0, state: str = "pending", site: str | None = "main app.py:3", coro: str = "work", ended: float | None = None) -> TaskInfo:
    t = TaskInfo(id=f"0x{abs(hash(name)) % 10**8:x}", name=name, coro=coro, state=state, created=None if age is None else 1000.0 - age, age=age, loop_id="0x1", site=site)
    if ended is not None:
        t.outcome = Outcome(state=state, ended=ended)
    return t


# -- query ------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [("90", 90.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" 3S ", 3.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "ms", "1.2.3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_sort():
    assert parse_sort(None) == ("age", True)
    assert parse_sort("age") == ("age", True)
    assert parse_sort("-age") == ("age", False)
    assert parse_sort("name") == ("name", False)
    assert parse_sort("-name") == ("name", True)
    assert parse_sort("+site") == ("site", False)
    with pytest.raises(QueryError, match="cannot sort by 'colour'"):
        parse_sort("colour")


def test_filter_parse_and_match():
    f = TaskFilter.parse("worker-* state=pending,running min_age=2s site=app.py")
    assert f.to_params() == {"name": "worker-*", "state": "pending,running", "min_age": 2.0, "site": "app.py"}
    assert f.matches(info("worker-1", age=3.0))
    assert not f.matches(info("worker-1", age=1.0))
    assert not f.matches(info("reader-1", age=3.0))
    assert not f.matches(info("worker-1", age=3.0, state="done"))
    assert not f.matches(info("worker-1", age=3.0, site=None))
    assert not f.matches(info("worker-1", age=None))
    assert TaskFilter.parse("age=1m").min_age == 60.0
    assert TaskFilter.parse("site=*app.py:?").matches(info("x", site="main app.py:3"))
    assert TaskFilter.parse("coro=wo*").matches(info("x"))
    assert not TaskFilter.parse("name=Worker*").matches(info("worker"))  # case-sensitive
    assert TaskFilter.parse("").to_params() == {}


@pytest.mark.parametrize(
    "params,message",
    [
        ({"colour": "red"}, "unknown filter field"),
        ({"state": "zombie"}, "unknown state 'zombie'"),
        ({"state": "pending,"}, "unknown state ''"),
        ({"name": 3}, "filter name must be a string"),
        ({"min_age": "old"}, "min_age must be a number"),
        ({"min_age": True}, "min_age must be a number"),
    ],
)
def test_filter_from_params_rejects(params, message):
    with pytest.raises(QueryError, match=message):
        TaskFilter.from_params(params)


def test_select_sorts_pages_and_counts():
    tasks = [info("b", 2.0), info("a", 5.0), info("untracked", None), info("c", 1.0)]
    matched, page = select(tasks, TaskFilter(), None, None)
    assert matched == 4 and [t.name for t in page] == ["a", "b", "c", "untracked"]  # oldest first, unknown last
    _, page = select(tasks, TaskFilter(), "-age", None)
    assert [t.name for t in page][:3] == ["c", "b", "a"]
    _, page = select(tasks, TaskFilter(), "name", 2, offset=1)
    assert [t.name for t in page] == ["b", "c"]
    matched, page = select(tasks, TaskFilter(name="[ab]"), "name", 1)
    assert matched == 2 and [t.name for t in page] == ["a"]
    with pytest.raises(QueryError):
        select(tasks, TaskFilter(), None, -1)


def test_group_counts_and_ages():
    tasks = [info("a", 5.0, site="s1"), info("b", 1.0, site="s1"), info("c", 2.0, site="s2"), info("d", None, site=None)]
    groups = group(tasks, "site")
    assert [(g.key, g.count, g.oldest_age, g.newest_age) for g in groups] == [
        ("s1", 2, 5.0, 1.0),
        ("(unknown: created before loopscope)", 1, None, None),
        ("s2", 1, 2.0, 2.0),
    ]
    assert [(g.key, g.count) for g in group(tasks, "state", TaskFilter(name="[abc]"))] == [("pending", 3)]
    with pytest.raises(QueryError, match="cannot group by"):
        group(tasks, "colour")


def test_select_history_most_recent_first():
    tasks = [info("old", state="done", ended=10.0), info("new", state="failed", ended=30.0), info("mid", state="done", ended=20.0)]
    matched, page = select_history(tasks, TaskFilter(), None, 2)
    assert matched == 3 and [t.name for t in page] == ["new", "mid"]
    _, page = select_history(tasks, TaskFilter(state="done"), None, None)
    assert [t.name for t in page] == ["mid", "old"]
    _, page = select_history(tasks, TaskFilter(), "name", None)
    assert [t.name for t in page] == ["mid", "new", "old"]


# -- model --------------------------------------------------------------------------


def _snapshot() -> Snapshot:
    fr = Frame("work", "/app.py", 3, "await x", {"x": "1"})
    t = TaskInfo(
        id="0x1",
        name="t",
        coro="work",
        state="pending",
        created=1.0,
        age=2.0,
        loop_id="0x9",
        site_id=1,
        site="main /app.py:9",
        stack=[fr],
        awaiters=[Awaiter("0x2", "u", "gather", [fr])],
        waiting_on=WaitTarget("sleep", "sleep(1)", deadline_in=0.5),
        creation_chain=[CreationLink("0x1", [fr], 1.0, "0x2", "u")],
        cancel=CancelRecord(1.0, None, None, [], "m", [fr], 2),
    )
    h = TaskInfo(id="0x3", name="h", coro="c", state="failed", created=None, age=None, loop_id="", outcome=Outcome("failed", 5.0, None, "ValueError", "boom", [fr]))
    loop = LoopInfo("0x9", "asyncio.x", 1, "MainThread", True, 1, True, 0.5, 4.0, [fr])
    hello = Hello(1, SCHEMA_VERSION, "0.1.0", "3.11.7", "cpython", 42, ["app.py"], 1.0, [loop], ["read"], "/tmp/s")
    return Snapshot(DUMP_FORMAT, SCHEMA_VERSION, 10.0, hello, [t], [h])


def test_model_round_trip():
    snap = _snapshot()
    data = json.loads(json.dumps(to_json(snap)))
    assert from_json(Snapshot, data) == snap
    assert Frame("f", "/a.py", 7).location() == "/a.py:7"
    assert Site(1, "main", "/a.py", 7).label() == "main /a.py:7"
    # optional fields may be missing; ints are accepted for floats
    minimal = {"id": "0x1", "name": "n", "coro": "c", "state": "pending", "created": 1, "age": None, "loop_id": "x"}
    t = from_json(TaskInfo, minimal)
    assert t.created == 1.0 and isinstance(t.created, float) and t.stack is None and t.tracked is True


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.pop("hello"), "Snapshot: missing field 'hello'"),
        (lambda d: d.update(taken_at="now"), "Snapshot.taken_at: expected a number, got str"),
        (lambda d: d["tasks"][0].update(age=True), "Snapshot.tasks[0].age: expected a number, got bool"),
        (lambda d: d["tasks"][0]["stack"][0].update(lineno="3"), "Snapshot.tasks[0].stack[0].lineno: expected an integer, got str"),
        (lambda d: d["tasks"][0].update(tracked=1), "expected true/false, got int"),
        (lambda d: d["tasks"][0]["stack"][0].update(locals=[1]), "expected an object, got list"),
        (lambda d: d.update(history={}), "Snapshot.history: expected a list, got dict"),
    ],
)
def test_model_rejects_bad_shapes(mutate, message):
    data = to_json(_snapshot())
    mutate(data)
    with pytest.raises(SchemaError, match=re.escape(message)):
        from_json(Snapshot, data)


# -- protocol ------------------------------------------------------------------------


def test_protocol_framing():
    line = protocol.request(3, "tasks.list", {"limit": 5})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.parse_request(line) == (3, "tasks.list", {"limit": 5})
    assert protocol.parse_request(protocol.request(4, "hello")) == (4, "hello", {})
    assert protocol.parse_request(b'{"jsonrpc":"2.0","id":"x","method":"m","params":null}') == ("x", "m", {})
    assert json.loads(protocol.response(1, {"a": "é"})) == {"jsonrpc": "2.0", "id": 1, "result": {"a": "é"}}
    err = json.loads(protocol.error_response(2, protocol.RPCError(-32601, "nope", {"methods": []})))
    assert err["error"] == {"code": -32601, "message": "nope", "data": {"methods": []}}


@pytest.mark.parametrize(
    "line,code",
    [
        (b"nope", protocol.PARSE_ERROR),
        (b"\xff", protocol.PARSE_ERROR),
        (b"[]", protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","method":"m"}', protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":5}', protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"m","id":{}}', protocol.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"m","params":[1]}', protocol.INVALID_PARAMS),
    ],
)
def test_protocol_rejects(line, code):
    with pytest.raises(protocol.RPCError) as ei:
        protocol.parse_request(line)
    assert ei.value.code == code


# -- config -------------------------------------------------------------------------


def test_config_from_environment(monkeypatch, capsys):
    monkeypatch.setenv("LOOPSCOPE_HISTORY_SIZE", "5")
    monkeypatch.setenv("LOOPSCOPE_ALLOW_CANCEL", "yes")
    monkeypatch.setenv("LOOPSCOPE_HEARTBEAT", "0.5")
    monkeypatch.setenv("LOOPSCOPE_MAX_CHAIN", "1")
    monkeypatch.setenv("LOOPSCOPE_VERBOSE", "maybe")
    cfg = config.load(history_size=7)
    assert cfg.history_size == 7  # keyword wins
    assert cfg.allow_cancel is True and cfg.heartbeat == 0.5
    assert cfg.max_chain == 2  # clamped
    assert cfg.verbose is False
    assert "ignoring LOOPSCOPE_VERBOSE" in capsys.readouterr().err
    with pytest.raises(TypeError, match="unknown option 'colour'"):
        config.load(colour="red")


def test_default_socket_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert config.default_socket_dir() == str(tmp_path / "loopscope")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert config.default_socket_dir() == f"/tmp/loopscope-{os.getuid()}"


# -- run ---------------------------------------------------------------------------------


def test_agent_environment():
    env = agent_environment({"PYTHONPATH": "/a:/b", "KEEP": "1"}, {"socket_dir": "/s", "allow_cancel": True, "history_size": None, "dump_signal": "none", "creation_frames": False})
    boot = env["PYTHONPATH"].split(":")[0]
    assert boot.endswith(os.path.join("loopscope", "agent", "_boot"))
    assert os.path.exists(os.path.join(boot, "sitecustomize.py"))
    assert env["PYTHONPATH"].split(":")[1:] == ["/a", "/b"]
    assert env["LOOPSCOPE_ENABLED"] == "1" and env["KEEP"] == "1"
    assert env["LOOPSCOPE_SOCKET_DIR"] == "/s" and env["LOOPSCOPE_ALLOW_CANCEL"] == "1" and env["LOOPSCOPE_DUMP_SIGNAL"] == "none"
    assert "LOOPSCOPE_HISTORY_SIZE" not in env and "LOOPSCOPE_CREATION_FRAMES" not in env
    again = agent_environment(env, {})
    assert again["PYTHONPATH"].split(":").count(boot) == 1


# -- render ---------------------------------------------------------------------------


def test_fmt_age():
    assert [render.fmt_age(x) for x in (None, 0.0123, 1.5, 90, 600, 9000)] == ["?", "12ms", "1.5s", "90.0s", "10.0m", "2.5h"]


def test_table_alignment_and_clipping():
    out = render.table(["a", "bb"], [["xxx", "y" * 10], ["z", "w"]], {1: 5}).splitlines()
    assert out[0] == "a    bb"
    assert set(out[1]) == {"-"}
    assert out[2] == "xxx  yy…yy"  # clipped in the middle: a location keeps its :line
    assert out[3] == "z    w"


def test_pstree_marks_await_cycles():
    a = {"id": "0xa", "name": "A", "stack": [], "awaiters": [{"task_id": "0xb", "task_name": "B", "via": "await"}]}
    b = {"id": "0xb", "name": "B", "stack": [], "awaiters": [{"task_id": "0xa", "task_name": "A", "via": "await"}]}
    out = render.pstree({"tasks": [a, b]})
    assert "↺ await cycle" in out
    assert "await cycle: " in out and "A (0xa)" in out and "B (0xb)" in out
    assert render.find_cycles({"0xa": a, "0xb": b}) == [["0xa", "0xb", "0xa"]]


def test_loop_banner():
    lines = render.loop_banner([{"id": "0x1", "thread_id": 7, "blocked": True, "blocked_for": 1.5, "blocked_since": 0.0, "blocked_stack": [{"function": "f", "filename": "/a.py", "lineno": 3, "source": "time.sleep(1)"}]}, {"id": "0x2", "blocked": False}])
    assert len(lines) == 2
    assert "loop 0x1 (thread 7) is BLOCKED for 1.5s" in lines[0]
    assert lines[1].strip() == "f /a.py:3    time.sleep(1)"


def test_weak_registry_forgets_freed_objects_without_a_word(monkeypatch: pytest.MonkeyPatch):
    """Entries leave through the dict's own ``pop`` as their objects are
    freed; a second registration keeps one entry; objects that cannot be
    keys read as absent.  A callback that raised would go to
    ``sys.unraisablehook``: nothing may."""
    import gc
    import sys

    from loopscope.agent.weakreg import WeakRegistry

    class Obj:
        pass

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

    raised: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    reg = WeakRegistry()
    objs = [Obj() for _ in range(1000)]
    for i, o in enumerate(objs):
        reg[o] = ("first", i)
    reg[objs[0]] = ("again", 0)
    assert len(reg) == 1000
    assert reg.get(objs[0]) == ("again", 0) and objs[1] in reg
    assert sorted(rec[1] for _, rec in reg.live()) == list(range(1000))
    survivor = objs[500]
    del objs, o
    gc.collect()
    assert len(reg) == 1 and reg.live() == [(survivor, ("first", 500))]
    assert reg.get(Obj()) is None and Obj() not in reg
    assert reg.get(1) is None and reg.get(Unhashable(), "none") == "none"
    with pytest.raises(TypeError):
        reg[1] = "an int cannot be weakly referenced"
    del survivor
    assert len(reg) == 0 and raised == []
