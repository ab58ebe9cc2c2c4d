"""End to end: ``loopscope top`` in a real terminal (tmux) on the demo service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from conftest import PYTHON, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (the CI installs it)")


def test_top_in_tmux_on_the_demo_service(ls):
    env = {**ls.env}
    service = subprocess.Popen(
        [PYTHON, "-m", "loopscope", "run", "--", PYTHON, "-m", "loopscope.demo.service", "--tasks", "300"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ls.base,
    )
    session = f"lstop-{uuid.uuid4().hex[:8]}"
    try:
        sock = os.path.join(ls.sockdir, f"{service.pid}.sock")
        wait_until(lambda: os.path.exists(sock), 20, what="the demo service's agent")
        envs = " ".join(f"{k}={v!s}" for k, v in {"LOOPSCOPE_SOCKET_DIR": ls.sockdir, "PYTHONPYCACHEPREFIX": env["PYTHONPYCACHEPREFIX"]}.items())
        cmd = f"env {envs} TERM=xterm-256color {sys.executable} -m loopscope top {service.pid}; echo TOP-EXITED-$?; sleep 30"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40", cmd], check=True)

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

        def until(pred, what: str, timeout: float = 10) -> str:
            try:
                return wait_until(lambda: (lambda t: t if pred(t) else None)(screen()), timeout, 0.2, what)
            except AssertionError as e:
                raise AssertionError(f"{e}; the screen:\n{screen()}") from None

        def keys(*k: str) -> None:
            subprocess.run(["tmux", "send-keys", "-t", session, *k], check=True)

        text = until(lambda s: ("conn1-req1" in s or "acceptor" in s) and "refreshed" in s, "task names on the screen", 30)
        # the title shows the command line; a long checkout path may clip its end
        assert f"pid {service.pid}" in text and "demo/service.py" in text

        keys("s")  # age -> name
        text = until(lambda s: "sort name" in s, "sort by name")
        assert "NAME ▲" in text
        shown = [line.split()[1] for line in text.splitlines() if line.startswith("0x")]
        assert shown == sorted(shown) and len(shown) > 10

        keys("/")
        # type only once the filter input is on screen: keys sent before it
        # is mounted go to the table and the first letters are lost
        until(lambda s: "▔▔▔▔▔▔▔▔▔▔" in s, "the filter input")
        keys("-l", "batch0-shard")
        keys("Enter")
        text = until(lambda s: "filter 'batch0-shard'" in s, "the filter")
        rows = [line for line in text.splitlines() if line.startswith("0x")]
        assert len(rows) == 10 and all("batch0-shard" in r and "shard" in r for r in rows), rows

        keys("Enter")
        text = until(lambda s: "Stack (innermost first)" in s, "the task detail")
        assert "task batch0-shard" in text and "coroutine  shard" in text
        assert "await asyncio.sleep(3600)" in text

        keys("Escape")
        wait_until(lambda: "filter 'batch0-shard'" in screen(), 10, 0.2, "back on the tasks list")
        keys("q")
        text = until(lambda s: "TOP-EXITED-" in s, "top to exit")
        assert "TOP-EXITED-0" in text and "Traceback" not in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        service.kill()
        service.wait(10)
