"""``loopscope run -- COMMAND``: start a program with the agent inside it.

Like ``opentelemetry-instrument`` or ``ddtrace-run``: the only change is the
environment.  ``agent/_boot`` goes first on PYTHONPATH (its sitecustomize
starts the agent) and LOOPSCOPE_* variables carry the options.  Every Python
process the command starts, and every one those start, inherits them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import loopscope

from ..client.errors import ClientError


def agent_environment(base: dict[str, str], options: dict[str, object]) -> dict[str, str]:
    pkg_dir = os.path.dirname(os.path.abspath(loopscope.__file__))
    boot = os.path.join(pkg_dir, "agent", "_boot")
    env = dict(base)
    paths = [boot] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != boot]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["LOOPSCOPE_ENABLED"] = "1"
    env["LOOPSCOPE_PACKAGE_DIR"] = pkg_dir
    for key, value in options.items():
        if value is None or value is False:
            continue
        env["LOOPSCOPE_" + key.upper()] = "1" if value is True else str(value)
    return env


def exec_under_agent(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ClientError("nothing to run: loopscope run [OPTIONS] -- COMMAND [ARGS…]")
    options = {
        "socket_dir": args.socket_dir,
        "allow_cancel": args.allow_cancel,
        "history_size": args.history_size,
        "creation_frames": args.creation_frames,
        "dump_signal": args.dump_signal,
        "prometheus": args.prometheus,
        "slow_step": args.slow_step,
        "metrics": "0" if args.no_metrics else None,
    }
    env = agent_environment(dict(os.environ), options)
    exe = shutil.which(cmd[0], path=env.get("PATH"))
    if exe is None:
        raise ClientError(f"command not found: {cmd[0]}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(exe, cmd, env)
    except OSError as e:
        raise ClientError(f"cannot run {cmd[0]}: {e.strerror}") from None
    return 0  # pragma: no cover - execve does not return
