"""Finding agents: one socket per process, named by pid, in a 0700 directory."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..agent.config import default_socket_dir
from .connection import pid_alive


@dataclass
class AgentSocket:
    pid: int
    path: str


def socket_dir() -> str:
    return os.environ.get("LOOPSCOPE_SOCKET_DIR") or default_socket_dir()


def socket_for_pid(pid: int) -> str:
    return os.path.join(socket_dir(), f"{pid}.sock")


def find_agents() -> list[AgentSocket]:
    """Sockets of live processes; sockets of dead ones are skipped (and
    removed when they are ours, so the directory does not fill up)."""
    directory = socket_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        if not name.endswith(".sock") or not name[:-5].isdigit():
            continue
        path = os.path.join(directory, name)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        pid = int(name[:-5])
        if not pid_alive(pid):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        out.append(AgentSocket(pid, path))
    return out
