"""``loopscope demo``: start the demo service under the agent, then show it.

In a terminal it opens ``loopscope top`` on the service; with ``--once``,
or when output is not a terminal (CI, a pipe), it prints the tour below.

The service runs in a separate process exactly as a user's would under
``loopscope run``; the tour then runs the same commands a user would type,
so what it prints is what those commands print.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from ..cli.run import agent_environment
from ..client.connection import Connection
from ..client.discovery import socket_for_pid
from ..client.errors import ClientError


def start_service(tasks: int) -> subprocess.Popen[bytes]:
    env = agent_environment(dict(os.environ), {})
    return subprocess.Popen(
        [sys.executable, "-m", "loopscope.demo.service", "--tasks", str(tasks)],
        env=env,
        stdin=subprocess.DEVNULL,
    )


def wait_for_agent(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    path = socket_for_pid(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClientError(f"the demo service exited with code {proc.returncode}")
        if os.path.exists(path):
            try:
                with Connection(path, proc.pid, timeout=2) as conn:
                    loops = conn.hello().get("loops") or []
                    if sum(lp.get("live_tasks", 0) for lp in loops) > 100:
                        return
            except ClientError:
                pass
        time.sleep(0.1)
    raise ClientError(f"the demo service did not start its agent within {timeout:.0f} s")


def _step(title: str, argv: list[str]) -> None:
    from ..cli.main import main

    print(f"\n\033[1m$ loopscope {' '.join(argv)}\033[0m   # {title}", flush=True)
    main(argv)
    sys.stdout.flush()
    sys.stderr.flush()


def run_top(pid: str) -> None:
    """Open ``loopscope top`` on the demo service (an interactive terminal)."""
    from ..tui.app import TopApp
    from ..tui.datasource import open_backend

    TopApp(pid, backend=open_backend(pid)).run()


def run_demo(args: argparse.Namespace) -> int:
    proc = start_service(args.tasks)
    try:
        wait_for_agent(proc)
        time.sleep(1.5)  # let the churn task fail and cancel a few tasks
        pid = str(proc.pid)
        if not args.once and sys.stdout.isatty() and sys.stdin.isatty():
            run_top(pid)
            return 0
        _step("agents this user can reach", ["list"])
        _step("where do all these tasks come from?", ["stats", pid, "--by", "site", "--limit", "8"])
        _step("the oldest tasks, with their own stacks and awaiters", ["ps", pid, "--sort", "age", "--limit", "8"])
        _step("who awaits whom in one batch job", ["pstree", pid, "--filter", "batch0*"])
        _step("one request handler in detail", ["inspect", pid, "conn1-req1"])
        _step("what failed or was cancelled recently", ["history", pid, "--limit", "8"])
        if args.once:
            return 0
        print(
            f"\nThe demo service keeps running as pid {pid}. Try, in another terminal:\n"
            f"  loopscope ps {pid} --filter state=pending --sort age --limit 20 -l\n"
            f"  loopscope history {pid} --failed\n"
            f"  loopscope dump {pid} -o demo.json && loopscope pstree demo.json\n"
            "Press Ctrl-C to stop it.",
            flush=True,
        )
        proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:  # a terminated process cannot remove its own socket
            os.unlink(socket_for_pid(proc.pid))
        except OSError:
            pass
