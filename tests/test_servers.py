"""Real servers under ``loopscope run``: uvicorn workers, aiohttp, gunicorn.

The issue's promise is "no code change, every process, every loop": these
start the real servers as a user would, send real HTTP requests that park in
a handler, and check the CLI finds each worker and the parked handler with
its stack.  Skipped, with the reason, where a server is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import PYTHON, Harness, wait_until

from loopscope.agent.tracker import _speedups

SERVERS = Path(__file__).resolve().parent / "servers"


def need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed for this Python (pip install -e '.[test]' installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server command under ``loopscope run``, in its own process group."""

    def __init__(self, ls: Harness, *cmd: str) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "loopscope", "run", "--", *cmd],
            cwd=SERVERS,
            env=ls.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def servers(ls: Harness) -> Any:
    started: list[Server] = []

    def start(*cmd: str) -> Server:
        srv = Server(ls, *cmd)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def agents(ls: Harness, word: str) -> list[dict[str, Any]]:
    res = ls.ok("list", "--json")
    return [a for a in res.json()["agents"] if word in a["command"]]


def request_in_background(url: str) -> None:
    def go() -> None:
        try:
            urllib.request.urlopen(url, timeout=90).read()
        except OSError:
            pass  # the server is killed while the request is parked

    threading.Thread(target=go, daemon=True).start()


def find_parked(ls: Harness, pids: list[int], function: str) -> tuple[int, dict[str, Any]]:
    """(pid, task) of the task whose own stack runs through ``function``."""

    def look() -> tuple[int, dict[str, Any]] | None:
        for pid in pids:
            page = ls.ok("ps", pid, "--json").json()
            for t in page["tasks"]:
                if any(f["function"] == function for f in t["stack"] or []):
                    return pid, t
        return None

    return wait_until(look, 20, what=f"a task parked in {function}")


def test_uvicorn_workers_are_each_tracked(ls: Harness, servers: Any) -> None:
    need("uvicorn")
    port = free_port()
    servers(PYTHON, "-m", "uvicorn", "asgi_app:app", "--port", str(port), "--workers", "2", "--log-level", "warning")
    workers = wait_until(
        lambda: [a for a in agents(ls, "uvicorn") if a["loops"] >= 1 and a["tasks"] >= 1][:2] if len([a for a in agents(ls, "uvicorn") if a["loops"] >= 1]) >= 2 else None,
        30,
        what="two uvicorn workers with a running loop",
    )
    assert len({w["pid"] for w in workers}) == 2
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 20, what="uvicorn to answer")
    request_in_background(f"http://127.0.0.1:{port}/slow")
    pid, task = find_parked(ls, [w["pid"] for w in workers], "slow_handler")
    assert task["stack"][0]["function"] == "sleep"
    assert [f["function"] for f in task["stack"]][:3] == ["sleep", "slow_handler", "app"]
    detail = ls.ok("inspect", pid, task["id"]).out
    assert "asgi_app.py" in detail and "waiting on sleep(60)" in detail


def _http_ok(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).read() == b"ok"
    except OSError:
        return False


def test_aiohttp_run_app_handler_is_seen_with_creation_site(ls: Harness, servers: Any) -> None:
    need("aiohttp")
    port = free_port()
    servers(PYTHON, "aio_app.py", str(port))
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 20, what="aiohttp to answer")
    (agent,) = wait_until(lambda: agents(ls, "aio_app.py"), 10, what="the aiohttp agent")
    request_in_background(f"http://127.0.0.1:{port}/slow")
    pid, task = find_parked(ls, [agent["pid"]], "slow")
    assert task["tracked"] is True
    assert "RequestHandler" in (task["site"] or ""), task["site"]
    assert task["waiting_on"]["kind"] == "sleep"
    # the handler task is awaited by the connection's RequestHandler.start task
    assert task["awaiters"] and task["awaiters"][0]["via"] == "await"
    # with the compiled parts, aiohttp's tasks are exact asyncio.Task objects
    # (agent/_speedups.c, "Exact tasks"), so CPython's fast paths stay theirs
    kind = urllib.request.urlopen(f"http://127.0.0.1:{port}/kind", timeout=5).read().decode()
    if _speedups is not None:
        assert kind == "_asyncio.Task", kind
    else:
        assert kind == "loopscope.agent.tracker.Task", kind


def test_gunicorn_forked_workers_get_their_own_agents(ls: Harness, servers: Any) -> None:
    need("gunicorn")
    need("aiohttp")
    port = free_port()
    servers(PYTHON, "-m", "gunicorn", "-k", "aiohttp.GunicornWebWorker", "-w", "2", "-b", f"127.0.0.1:{port}", "aio_app:app")
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 30, what="gunicorn to answer")
    workers = wait_until(
        lambda: (lambda ws: ws if len(ws) >= 2 else None)([a for a in agents(ls, "gunicorn") if a["tasks"] >= 1 and "aiohttp" in a["command"]]),
        30,
        what="two forked gunicorn workers with tasks",
    )
    pids = [w["pid"] for w in workers]
    assert len(set(pids)) >= 2
    request_in_background(f"http://127.0.0.1:{port}/slow")
    pid, task = find_parked(ls, pids, "slow")
    assert task["stack"][0]["function"] == "sleep"
    hello = json.loads(ls.ok("ps", pid, "--json", "--limit", "1").out)
    assert hello["total"] >= 2
