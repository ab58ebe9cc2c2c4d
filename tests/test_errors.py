"""Errors a user can fix: one clear line on stderr, exit code 2, no traceback.
And the wire protocol's errors, which must never hurt the monitored program."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import PYTHON, assert_clean_error, raw_exchange, wait_until

S = "mixed.py"


@pytest.fixture
def mixed(ls):
    return ls.start_ready(S)


@pytest.fixture
def dump_file(ls, mixed):
    path = ls.path("good.json")
    ls.ok("dump", mixed.pid, "-o", path)
    return path


# -- targets ----------------------------------------------------------------------


def test_nonexistent_pid(ls):
    pid = 999999
    assert pid > int(open("/proc/sys/kernel/pid_max").read()) or not os.path.exists(f"/proc/{pid}")
    for cmd in ("ps", "pstree", "stats", "history", "dump"):
        assert_clean_error(ls.cli(cmd, pid), f"no such process: {pid}")
    assert_clean_error(ls.cli("inspect", pid, "x"), f"no such process: {pid}")


def test_live_pid_without_agent(ls):
    assert_clean_error(ls.cli("ps", os.getpid()), f"process {os.getpid()} has no loopscope agent")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert_clean_error(ls.cli("pstree", sleeper.pid), f"process {sleeper.pid} has no loopscope agent", "loopscope run")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_python_program_without_agent(ls):
    prog = ls.start("mixed.py", agent=False)
    prog.wait_line("READY")
    assert_clean_error(ls.cli("ps", prog.pid), "has no loopscope agent")


def test_missing_file_and_directory(ls):
    assert_clean_error(ls.cli("ps", ls.path("nope.json")), "no such process or file")
    assert_clean_error(ls.cli("ps", ls.base), "is a directory, not a dump file")


def test_stale_socket_of_dead_process(ls):
    prog = ls.start_ready(S)
    prog.kill()  # SIGKILL: the agent cannot remove its socket
    assert os.path.exists(prog.socket)
    assert_clean_error(ls.cli("ps", prog.socket), "stale socket")
    assert_clean_error(ls.cli("ps", prog.pid), f"process {prog.pid} is not listening", "stale socket")
    # `list` skips it and cleans it up
    assert ls.ok("list", "--json").json()["agents"] == []
    assert not os.path.exists(prog.socket)


# -- corrupt dump files -----------------------------------------------------------------


def _write(ls, name: str, data: bytes | str) -> str:
    path = ls.path(name)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("garbage.bin", bytes(range(256)) * 4, "is not a loopscope dump (not valid JSON"),
        ("empty.json", b"", "is not a loopscope dump (not valid JSON"),
        ("latin.json", b'{"format": "loopscope-dump", "x": "\xe9"}', "is not a loopscope dump (not valid JSON"),
        ("object.json", '{"hello": "world"}', "is not a loopscope dump (no 'loopscope-dump' format marker)"),
        ("list.json", "[1, 2, 3]", "no 'loopscope-dump' format marker"),
        ("string.json", '"loopscope-dump"', "no 'loopscope-dump' format marker"),
        ("noschema.json", '{"format": "loopscope-dump"}', "uses dump schema None"),
    ],
)
def test_not_a_dump(ls, name, content, message):
    path = _write(ls, name, content)
    for cmd in ("ps", "pstree", "stats", "history"):
        assert_clean_error(ls.cli(cmd, path), path, message)


def test_truncated_dump(ls, dump_file):
    raw = open(dump_file, "rb").read()
    for cut in (1, len(raw) // 3, len(raw) - 1):
        path = _write(ls, f"cut{cut}.json", raw[:cut])
        assert_clean_error(ls.cli("ps", path), "is not a loopscope dump (not valid JSON")


def test_deeply_nested_garbage(ls):
    path = _write(ls, "deep.json", "[" * 100_000)
    assert_clean_error(ls.cli("ps", path), "is not a loopscope dump")


def test_future_schema(ls, dump_file):
    data = json.load(open(dump_file))
    data["schema"] = 2
    path = _write(ls, "future.json", json.dumps(data))
    assert_clean_error(ls.cli("ps", path), "uses dump schema 2; this loopscope reads up to 1 (upgrade loopscope)")
    assert_clean_error(ls.cli("inspect", path, "worker-0"), "uses dump schema 2")


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(tasks="oops"), "Snapshot.tasks: expected a list, got str"),
        (lambda d: d["tasks"][0].update(id=7), "Snapshot.tasks[0].id: expected a string, got int"),
        (lambda d: d["tasks"][0].pop("name"), "Snapshot.tasks[0]: missing field 'name'"),
        (lambda d: d["hello"].update(loops=[{"id": "x"}]), "Snapshot.hello.loops[0]: missing field 'kind'"),
        (lambda d: d.update(schema=True), "Snapshot.schema: expected an integer, got bool"),
        (lambda d: d["history"][0].update(outcome=[]), "Snapshot.history[0].outcome: expected an object, got list"),
    ],
    ids=["tasks-not-list", "id-not-str", "missing-name", "bad-loop", "bool-schema", "bad-outcome"],
)
def test_valid_json_wrong_shape(ls, dump_file, mutate, message):
    data = json.load(open(dump_file))
    mutate(data)
    path = _write(ls, "shape.json", json.dumps(data))
    assert_clean_error(ls.cli("ps", path), "is a corrupt loopscope dump", message)


# -- bad arguments -------------------------------------------------------------------------


def test_unknown_task_name(ls, mixed, dump_file):
    assert_clean_error(ls.cli("inspect", mixed.pid, "no-such-task"), "no live task 'no-such-task'")
    assert_clean_error(ls.cli("inspect", dump_file, "no-such-task"), "no task 'no-such-task' in")
    assert_clean_error(ls.cli("inspect", mixed.pid, "0xdeadbeef"), "no live task '0xdeadbeef'")


def test_ambiguous_task_name(ls):
    prog = ls.start_ready("nested.py")
    res = ls.cli("inspect", prog.pid, "foo2")
    assert_clean_error(res, "7 live tasks are named 'foo2'; use an id (0x")
    dump = ls.path("n.json")
    ls.ok("dump", prog.pid, "-o", dump)
    assert_clean_error(ls.cli("inspect", dump, "foo2"), "7 tasks are named 'foo2'; use an id")


@pytest.mark.parametrize("target", ["live", "dump"])
def test_bad_sort_and_filter(ls, mixed, dump_file, target):
    t = mixed.pid if target == "live" else dump_file
    assert_clean_error(ls.cli("ps", t, "--sort", "bogus"), "cannot sort by 'bogus' (one of: age, created, name")
    assert_clean_error(ls.cli("history", t, "--sort", "bogus"), "cannot sort by 'bogus'")
    assert_clean_error(ls.cli("ps", t, "--filter", "state=bogus"), "unknown state 'bogus' (one of: pending")
    assert_clean_error(ls.cli("stats", t, "--filter", "state=pending,nope"), "unknown state 'nope'")
    assert_clean_error(ls.cli("history", t, "--filter", "state=zombie"), "unknown state 'zombie'")
    assert_clean_error(ls.cli("ps", t, "--filter", "colour=red"), "unknown filter field(s): colour")
    assert_clean_error(ls.cli("ps", t, "--filter", "min_age=soon"), "not a duration: 'soon'")
    assert_clean_error(ls.cli("ps", t, "--limit", "-1"), "must not be negative")


def test_stats_negative_limit(ls, mixed):
    assert_clean_error(ls.cli("stats", mixed.pid, "--limit", "-1"), "must not be negative")


def test_usage_errors(ls):
    res = ls.cli()
    assert res.rc == 2 and "usage: loopscope" in res.out
    res = ls.cli("ps")
    assert res.rc == 2 and "the following arguments are required: TARGET" in res.err and "Traceback" not in res.err
    res = ls.cli("stats", "1", "--by", "colour")
    assert res.rc == 2 and "invalid choice: 'colour'" in res.err
    assert_clean_error(ls.cli("run"), "nothing to run")
    assert_clean_error(ls.cli("run", "--", "no-such-command-xyz"), "command not found: no-such-command-xyz")


# -- the wire protocol -------------------------------------------------------------------


def test_jsonrpc_errors_and_program_keeps_running(ls, mixed):
    sock = mixed.socket

    def one(payload: bytes) -> dict:
        (answer,) = raw_exchange(sock, payload)
        return answer

    a = one(b"this is not json\n")
    assert a["error"]["code"] == -32700 and a["id"] is None
    assert one(b"\xff\xfe\x00garbage\n")["error"]["code"] == -32700
    assert one(b'{"jsonrpc": "2.0", "id": 1, "method": "tasks.list"\n')["error"]["code"] == -32700
    a = one(b'{"jsonrpc":"2.0","id":7,"method":"no.such.method"}\n')
    assert a["id"] == 7 and a["error"]["code"] == -32601
    assert "tasks.graph" in a["error"]["data"]["methods"]
    assert one(b'[{"jsonrpc":"2.0","id":1,"method":"hello"}]\n')["error"]["code"] == -32600
    assert one(b'{"id":1,"method":"hello"}\n')["error"]["code"] == -32600
    assert one(b'{"jsonrpc":"2.0","id":1}\n')["error"]["code"] == -32600
    assert one(b'{"jsonrpc":"2.0","id":[1],"method":"hello"}\n')["error"]["code"] == -32600

    a = one(b'{"jsonrpc":"2.0","id":3,"method":"hello","params":[1,2]}\n')
    assert a["error"]["code"] == -32602
    bad_params = [
        {"method": "tasks.graph", "params": {"limit": "ten"}},
        {"method": "tasks.graph", "params": {"limit": True}},
        {"method": "tasks.graph", "params": {"sort": "bogus"}},
        {"method": "tasks.graph", "params": {"filter": {"state": "zombie"}}},
        {"method": "tasks.graph", "params": {"filter": {"colour": "red"}}},
        {"method": "tasks.graph", "params": {"filter": "name=x"}},
        {"method": "tasks.list", "params": {"detail": "everything"}},
        {"method": "tasks.list", "params": {"offset": -1}},
        {"method": "tasks.get", "params": {"task": 12}},
        {"method": "tasks.get", "params": {}},
        {"method": "history.list", "params": {"kind": "forgotten"}},
        {"method": "history.list", "params": {"filter": {"min_age": "old"}}},
        {"method": "stats", "params": {"by": "colour"}},
        {"method": "stats", "params": {"by": 3}},
    ]
    for i, req in enumerate(bad_params):
        a = one(json.dumps({"jsonrpc": "2.0", "id": i, **req}).encode() + b"\n")
        assert a.get("error", {}).get("code") == -32602, (req, a)
        assert a["id"] == i

    a = one(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks.get", "params": {"task": "nobody"}}).encode() + b"\n")
    assert a["error"]["code"] == -32001
    a = one(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks.cancel", "params": {"task": "worker-0"}}).encode() + b"\n")
    assert a["error"]["code"] == -32002  # cancelling is off unless allowed

    # several requests on one connection, blank lines ignored, answers in order
    answers = raw_exchange(sock, b'{"jsonrpc":"2.0","id":1,"method":"hello"}\n\n{"jsonrpc":"2.0","id":2,"method":"nope"}\nnope\n')
    assert [a.get("id") for a in answers] == [1, 2, None]
    assert "result" in answers[0] and answers[1]["error"]["code"] == -32601 and answers[2]["error"]["code"] == -32700

    # an oversized request is refused, not buffered
    answers = raw_exchange(sock, b'{"jsonrpc":"2.0","id":1,"method":"hello","params":{"x":"' + b"a" * (1 << 20) + b'"}}\n')
    assert answers[0]["error"]["code"] == -32003

    # the program never noticed
    assert mixed.alive()
    assert mixed.stderr.text == ""
    page = mixed.call("tasks.list", {})
    assert page["total"] == 8
    assert mixed.call("hello")["pid"] == mixed.pid


def test_jsonrpc_deeply_nested_request_is_a_parse_error(ls, mixed):
    (a,) = raw_exchange(mixed.socket, b"[" * 100_000 + b"\n")
    assert a["error"]["code"] == -32700


def test_jsonrpc_error_keeps_request_id(ls, mixed):
    (a,) = raw_exchange(mixed.socket, b'{"jsonrpc":"2.0","id":3,"method":"hello","params":[1,2]}\n')
    assert a["error"]["code"] == -32602
    assert a["id"] == 3


def test_client_disconnects_midway(ls, mixed):
    """Half a request, then the client goes away: nothing breaks."""
    import socket

    for payload in (b'{"jsonrpc":"2.0","id":1,"met', b'{"jsonrpc":"2.0","id":1,"method":"snapshot"}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(mixed.socket)
            s.sendall(payload)
    wait_until(lambda: mixed.call("hello")["pid"] == mixed.pid, timeout=5, what="the agent to answer again")
    assert mixed.alive()


def test_agent_ignores_bad_environment(ls):
    """A malformed LOOPSCOPE_* variable is reported and ignored; the program runs."""
    prog = ls.start("mixed.py", env={"LOOPSCOPE_HISTORY_SIZE": "lots"})
    prog.wait_line("READY")
    prog.wait_agent()
    prog.stderr.wait_line(lambda s: "ignoring LOOPSCOPE_HISTORY_SIZE" in s, timeout=5)


def test_cli_module_and_script_agree(ls):
    """`python -m loopscope` and the console script are the same program."""
    res = subprocess.run([PYTHON, "-m", "loopscope", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "loopscope 0.1.0"
    script = os.path.join(os.path.dirname(sys.executable), "loopscope")
    if os.path.exists(script):
        res2 = subprocess.run([script, "--version"], capture_output=True, text=True)
        assert res2.stdout == res.stdout
