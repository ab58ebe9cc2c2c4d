"""The socket's directory and file are private; `list` finds the agents."""

from __future__ import annotations

import os
import platform
import socket
import stat
import sys
import warnings

import pytest

from conftest import parse_table, wait_until


def test_socket_dir_and_file_modes(ls):
    assert not os.path.exists(ls.sockdir)  # the agent creates it
    prog = ls.start_ready("mixed.py")
    st = os.lstat(ls.sockdir)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid()
    sst = os.lstat(prog.socket)
    assert stat.S_ISSOCK(sst.st_mode)
    assert stat.S_IMODE(sst.st_mode) & 0o077 == 0, oct(sst.st_mode)
    assert stat.S_IMODE(sst.st_mode) == 0o600


def test_agent_refuses_an_open_directory(ls):
    os.makedirs(ls.sockdir, mode=0o755)
    os.chmod(ls.sockdir, 0o755)
    prog = ls.start("mixed.py")
    prog.wait_line("READY")
    prog.stderr.wait_line(lambda s: "server not started" in s and "open to other users" in s, timeout=5)
    assert not os.path.exists(prog.socket)
    assert prog.alive()  # the program runs on, unmonitored


def test_list_shows_the_process(ls):
    assert ls.ok("list").err.startswith("no loopscope agents found")
    prog = ls.start_ready("mixed.py")
    other = ls.start_ready("chain.py")
    rows = parse_table(ls.ok("list").out)
    by_pid = {int(r["pid"]): r for r in rows}
    assert set(by_pid) == {prog.pid, other.pid}
    r = by_pid[prog.pid]
    assert r["python"] == platform.python_version()
    assert r["loops"] == "1"
    assert int(r["tasks"]) == 8
    assert r["blocked"] == "no"
    assert r["command"].endswith("mixed.py")
    data = ls.ok("list", "--json").json()
    assert data["schema"] == 1
    (j,) = [a for a in data["agents"] if a["pid"] == prog.pid]
    assert j["tasks"] > 0 and j["socket"] == prog.socket and j["python"] == platform.python_version()
    # hello says who it is
    hello = prog.call("hello")
    assert hello["pid"] == prog.pid and hello["permissions"] == ["read"]
    assert hello["implementation"] == sys.implementation.name
    assert hello["argv"][0].endswith("mixed.py")
    # a process that exits takes its socket away
    prog.popen.terminate()
    prog.wait_exit(10)
    wait_until(lambda: not os.path.exists(prog.socket) or prog.socket not in [a["socket"] for a in ls.ok("list", "--json").json()["agents"]], timeout=5, what="the agent to disappear from list")
    assert [a["pid"] for a in ls.ok("list", "--json").json()["agents"]] == [other.pid]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
def test_other_user_cannot_connect(ls):
    prog = ls.start_ready("mixed.py")
    nobody = 65534
    # A forked child (the interpreter itself is not readable by nobody here)
    # drops to another uid and tries the socket: 0 = refused, 1 = connected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(prog.socket)
                code = 1
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert prog.alive()
