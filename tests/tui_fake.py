"""A fake backend for the TUI tests: fixed tasks, a fixed clock, and a
record of the calls it got (so a test can check a cancel really was sent,
or really was not)."""

from __future__ import annotations

from typing import Any

from loopscope.client.connection import RemoteError
from loopscope.client.errors import ClientError
from loopscope.protocol import METHOD_NOT_FOUND

NOW = 1_800_000_000.0
COLUMNS = ["id", "name", "coro", "state", "created", "site_id", "parent_id", "parent_name", "loop_id"]
SITES = {1: "accept app.py:10", 2: "handle app.py:22", 3: "flush jobs.py:5"}


def make_tasks(n: int = 30) -> list[list[Any]]:
    """Rows in the wire form of ``tasks.delta``; names, ages and sites vary
    so that every sort and group gives a different order."""
    rows = []
    for i in range(n):
        site = 1 if i % 5 == 0 else 2 if i % 5 in (1, 2, 3) else 3
        name = f"worker-{i}" if site == 2 else f"conn-{i}" if site == 1 else f"flush-{i}"
        coro = {1: "accept", 2: "handle", 3: "flush"}[site]
        created = NOW - (n - i) * 7.0 - (i * 37 % 11)
        rows.append([f"0x{0x1000 + i:x}", name, coro, "pending", created, site, None, None, "0xloop"])
    return rows


def health_shape(blocked: bool = True) -> dict[str, Any]:
    frame = {"function": "crunch", "filename": "/srv/app/cpu.py", "lineno": 42, "source": "total = sum(range(10**9))"}
    return {
        "loops": [
            {
                "loop_id": "0xloop", "thread": "MainThread", "kind": "asyncio", "exact": True,
                "lag": {"last": 0.0021, "max": 0.250, "avg": 0.004, "interval": 0.1},
                "utilisation": 0.42,
                "steps": {"count": 12345, "min": 0.00001, "avg": 0.0002, "p50": 0.0001, "p95": 0.0009, "p99": 0.0031, "max": 0.25},
                "tasks": {"created": 500, "finished": 470, "failed": 3, "cancelled": 7, "live": 30},
                "blocked": {"since": NOW - 1.5, "duration": 1.5, "task": {"id": "0x1001", "name": "worker-1", "coro": "handle"}, "stack": [frame]} if blocked else None,
                "blocking": [{"at": NOW - 20, "duration": 0.25, "task": {"id": "0x1002", "name": "worker-2", "coro": "handle"}, "stack": [frame]}],
                "executors": [{"name": "default", "max_workers": 4, "active": 1, "queued": 0}],
                "top_busy": [{"id": "0x1001", "name": "worker-1", "coro": "handle", "steps": 10, "busy": 1.9, "idle": 3.0, "longest": 1.5}],
                "series": {"t": [NOW - 5 + i for i in range(5)], "lag": [0.001, 0.002, 0.25, 0.003, 0.0021], "utilisation": [0.1, 0.2, 0.9, 0.5, 0.42], "p99": [0.001, 0.001, 0.2, 0.003, 0.0031], "live": [20, 25, 28, 30, 30]},
            }
        ]
    }


class FakeBackend:
    kind = "agent"
    label = "pid 4242"
    pid = 4242

    def __init__(self, rows: list[list[Any]] | None = None, *, allow_cancel: bool = False, health: dict[str, Any] | None = None, blocked: bool = False) -> None:
        self.rows = rows if rows is not None else make_tasks()
        self.health_data = health
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.dead = False
        self.loops = [{"id": "0xloop", "kind": "asyncio", "thread_id": 1, "thread_name": "MainThread", "running": True, "live_tasks": len(self.rows), "blocked": blocked, "blocked_for": 1.5 if blocked else None, "blocked_since": None, "blocked_stack": [{"function": "crunch", "filename": "/srv/app/cpu.py", "lineno": 42, "source": "total = sum(range(10**9))"}] if blocked else None}]
        self.hello = {"pid": 4242, "python": "3.11.7", "argv": ["app.py", "--port", "8080"], "permissions": ["read", "cancel"] if allow_cancel else ["read"], "loops": self.loops}
        self._sent = False

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if self.dead:
            raise ClientError("process 4242 died during the query")
        if method == "tasks.delta":
            first = not self._sent
            self._sent = True
            return {"cursor": "c", "reset": first, "more": False, "columns": COLUMNS, "added": self.rows if first else [], "removed": [],
                    "sites": {str(k): v for k, v in SITES.items()}, "running": [], "total": len(self.rows), "loops": self.loops}
        if method == "tasks.get":
            row = next(r for r in self.rows if r[0] == params["task"])
            frame = {"function": row[2], "filename": "/srv/app/app.py", "lineno": 99, "source": "await asyncio.sleep(60)",
                     "locals": {"conn": "<Conn 7>"} if params.get("locals") else None}
            return {"id": row[0], "name": row[1], "coro": row[2], "state": "pending", "created": row[4], "age": NOW - row[4], "loop_id": "0xloop",
                    "site": SITES[row[5]], "stack": [frame], "awaiters": [], "waiting_on": {"kind": "sleep", "description": "asyncio.sleep(60)"}, "creation_chain": []}
        if method == "tasks.cancel":
            if "cancel" not in self.hello["permissions"]:
                raise RemoteError(-32002, "not allowed")
            return {"task": params["task"], "scheduled": True}
        if method == "history.list":
            return {"total": 1, "matched": 1, "tasks": [{"id": "0x9", "name": "flaky-3", "coro": "flaky_call", "state": "failed", "created": NOW - 9, "age": None, "loop_id": "0xloop",
                                                         "outcome": {"state": "failed", "ended": NOW - 8, "exc_type": "ConnectionError", "exc_message": "upstream refused call 3", "traceback": []}}]}
        if method == "health":
            if self.health_data is None:
                raise RemoteError(METHOD_NOT_FOUND, "method not found: 'health'")
            return self.health_data
        raise RemoteError(METHOD_NOT_FOUND, f"method not found: {method!r}")

    def close(self) -> None:
        pass
