"""A blocking JSON-RPC connection to one agent's Unix socket."""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import Any

from ..protocol import PROTOCOL_VERSION, request
from .errors import ClientError


class RemoteError(ClientError):
    """The agent answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Connection:
    def __init__(self, path: str, pid: int | None = None, timeout: float = 10.0) -> None:
        self.path = path
        self.pid = pid
        self.timeout = timeout
        self._next = 1
        self._broken = False
        self._connect()

    def _connect(self) -> None:
        path, pid = self.path, self.pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(self.timeout)
        try:
            self._sock.connect(path)
        except FileNotFoundError:
            self._sock.close()
            raise ClientError(f"no agent socket at {path}") from None
        except PermissionError:
            self._sock.close()
            raise ClientError(f"permission denied opening {path} (the agent belongs to another user)") from None
        except ConnectionRefusedError:
            self._sock.close()
            who = f"process {pid}" if pid else "the process"
            raise ClientError(f"{who} is not listening on {path} (stale socket: the agent stopped or the process died)") from None
        except OSError as e:
            self._sock.close()
            raise ClientError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._reader = self._sock.makefile("rb")
        self._broken = False

    def _break(self) -> None:
        """After a timeout the rest of the late answer would still arrive on
        this socket and be read as the answer to the next request: drop the
        connection; the next call opens a fresh one."""
        self._broken = True
        try:
            self.close()
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self._broken:
            self._connect()
        req_id = self._next
        self._next += 1
        try:
            self._sock.sendall(request(req_id, method, params))
            line = self._reader.readline()
        except socket.timeout:
            self._break()
            raise ClientError(f"the agent did not answer {method} within {self.timeout:.0f} s") from None
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                line = b""
            else:
                raise ClientError(f"connection to the agent failed: {e.strerror or e}") from None
        if not line:
            if self.pid is not None and not pid_alive(self.pid):
                raise ClientError(f"process {self.pid} died during the query")
            raise ClientError("the agent closed the connection during the query")
        try:
            msg = json.loads(line)
        except ValueError:
            self._break()
            raise ClientError("the agent sent a malformed answer") from None
        if isinstance(msg, dict) and msg.get("id") not in (req_id, None):
            self._break()
            raise ClientError(f"the agent answered request {msg.get('id')!r}, not {req_id}: connection reset")
        if "error" in msg:
            err = msg["error"] or {}
            raise RemoteError(err.get("code", 0), str(err.get("message", "unknown error")), err.get("data"))
        return msg.get("result")

    def hello(self) -> dict[str, Any]:
        hello = self.call("hello")
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
            got = hello.get("protocol") if isinstance(hello, dict) else None
            version = hello.get("agent_version") if isinstance(hello, dict) else "?"
            raise ClientError(
                f"incompatible agent: version {version} speaks protocol {got}, this loopscope speaks {PROTOCOL_VERSION}"
            )
        return hello
