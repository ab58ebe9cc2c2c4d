"""The agent's socket server: its own threads, a Unix socket, peer checks.

The server never touches the event loop: it answers from its own threads, so
it answers while the loop is blocked.  Security by default: the socket lives
in a directory only this user can enter (0700, owned by us, else we refuse
to start), and every connection's peer uid is checked with SO_PEERCRED: the
same user or root get in, anyone else is told so and disconnected.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..protocol import INTERNAL_ERROR, MAX_LINE, TOO_LARGE, RPCError, error_response, parse_request, response_chunks

MAX_CLIENTS = 16


class ServerError(Exception):
    """The server could not start (unsafe directory, path too long, …)."""


def prepare_dir(path: str) -> str:
    """Create the socket directory 0700, or check an existing one is ours."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ServerError(f"cannot create {path}: {e.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ServerError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise ServerError(f"{path} belongs to uid {st.st_uid}, not to us ({os.getuid()}): refusing to listen there")
    if st.st_mode & 0o077:
        raise ServerError(f"{path} is open to other users (mode {oct(st.st_mode & 0o777)}): refusing to listen there")
    return path


def peer_uid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class Server:
    def __init__(self, directory: str, handler: Callable[[str, dict[str, Any]], Any], on_error: Callable[[BaseException], None]) -> None:
        self.directory = prepare_dir(directory)
        self.path = os.path.join(self.directory, f"{os.getpid()}.sock")
        self.handler = handler
        self.on_error = on_error
        self._sock: socket.socket | None = None
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if len(self.path.encode()) > 107:
            raise ServerError(f"socket path too long for AF_UNIX: {self.path}")
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from a dead process with our pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        sock.listen(16)
        self._sock = sock
        self.thread = threading.Thread(target=self._accept_loop, name="loopscope-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stopping = True
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._stopping and self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            uid = peer_uid(conn)
            if uid is None or (uid != os.getuid() and uid != 0):
                self._refuse(conn, f"permission denied: peer uid {uid} is not the owner ({os.getuid()}) or root")
                continue
            if not self._clients.acquire(blocking=False):
                self._refuse(conn, f"too many clients (at most {MAX_CLIENTS})")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="loopscope-client", daemon=True).start()

    def _refuse(self, conn: socket.socket, message: str) -> None:
        try:
            conn.sendall(error_response(None, RPCError(-32002, message)))
        except OSError:
            pass
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                while not self._stopping:
                    line = reader.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE and not line.endswith(b"\n"):
                        conn.sendall(error_response(None, RPCError(TOO_LARGE, f"request over {MAX_LINE} bytes")))
                        return
                    if not line.strip():
                        continue
                    for chunk in self._answer(line):
                        conn.sendall(chunk)
        except (OSError, ValueError):
            return  # the client went away: nothing to tell anyone
        finally:
            self._clients.release()

    def _answer(self, line: bytes) -> Iterator[bytes]:
        req_id = None
        try:
            req_id, method, params = parse_request(line)
            result = self.handler(method, params)
        except RPCError as e:
            return iter([error_response(req_id if req_id is not None else e.req_id, e)])
        except Exception as e:  # noqa: BLE001 - report, never crash the thread
            self.on_error(e)
            return iter([error_response(req_id, RPCError(INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}"))])
        return response_chunks(req_id, result)


def warn(message: str) -> None:
    print(f"loopscope: {message}", file=sys.stderr)
