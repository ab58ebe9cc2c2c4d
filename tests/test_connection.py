"""The client's connection survives a late answer without desynchronising."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time

import pytest

from loopscope.client.connection import Connection
from loopscope.client.errors import ClientError


def _serve(path: str, delays: list[float]) -> threading.Thread:
    """A fake agent: answers each request after the next delay in ``delays``."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as r:
            for line in r:
                req = json.loads(line)
                time.sleep(delays.pop(0) if delays else 0)
                try:
                    conn.sendall(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": req["method"]}).encode() + b"\n")
                except OSError:
                    return

    def run() -> None:
        with srv:
            for _ in range(2):
                conn, _addr = srv.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_timed_out_call_does_not_poison_the_next_one():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.sock")
        _serve(path, [0.5, 0.0])
        conn = Connection(path, None, timeout=0.2)
        with pytest.raises(ClientError, match="did not answer first within"):
            conn.call("first")
        time.sleep(0.5)  # the late answer to "first" arrives meanwhile
        assert conn.call("second") == "second"  # a fresh connection, not the stale line
        conn.close()
