"""A fake backend for the TUI tests: fixed tasks, a fixed clock, and a
record of the calls it got (so a test can check a cancel really was sent,
or really was not)."""

from __future__ import annotations

from typing import Any

from loopscope.client.connection import RemoteError
from loopscope.client.errors import ClientError
from loopscope.protocol import METHOD_NOT_FOUND

NOW = 1_800_000_000.0
COLUMNS = ["id", "name", "coro", "state", "created", "site_id", "parent_id", "parent_name", "loop_id", "steps", "busy", "longest", "first_step"]
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
        # step counters (busy, switches): every 10th task never ran (None)
        if i % 10 == 9:
            steps, busy, longest, first = None, None, None, None
        else:
            steps = 1 + i * 13 % 17
            busy = round(steps * (1 + i * 7 % 5) * 0.00037, 6)
            longest, first = round(busy / steps * 2, 6), 0.0001
        rows.append([f"0x{0x1000 + i:x}", name, coro, "pending", created, site, None, None, "0xloop", steps, busy, longest, first])
    return rows


def _ref(tid: str, name: str, role: str, for_s: float | None, line: int | None = None, state: str = "pending") -> dict[str, Any]:
    where = {"function": name, "filename": "/srv/app/locks.py", "lineno": line, "source": None, "locals": None} if line else None
    return {"task_id": tid, "task_name": name, "state": state, "role": role, "since": NOW - for_s if for_s is not None else None, "for_s": for_s, "where": where}


def primitives_shape() -> dict[str, Any]:
    """``primitives.list`` as the agent answers it: two locks in an
    opposite-order deadlock, a lock left held by a finished task, a queue
    with a blocked getter, an event nobody waits on."""
    return {"enabled": True, "primitives": [
        {"id": "0xa1", "kind": "Lock", "state": "locked", "tracked": True, "site": "main /srv/app/locks.py:40", "created": NOW - 30, "age": 30.0, "locked": True,
         "holders": [_ref("0x1001", "left", "holder", 12.5, 20)], "holders_known": True, "waiters": [_ref("0x1002", "right", "acquire", 12.4, 29)]},
        {"id": "0xa2", "kind": "Lock", "state": "locked", "tracked": True, "site": "main /srv/app/locks.py:41", "created": NOW - 30, "age": 30.0, "locked": True,
         "holders": [_ref("0x1002", "right", "holder", 12.5, 29)], "holders_known": True, "waiters": [_ref("0x1001", "left", "acquire", 12.4, 20)]},
        {"id": "0xa3", "kind": "Lock", "state": "locked", "tracked": True, "site": "main /srv/app/locks.py:42", "created": NOW - 30, "age": 30.0, "locked": True,
         "holders": [_ref("0x1003", "leaker", "holder", 11.0, state="done")], "holders_known": True, "waiters": [_ref("0x1004", "victim", "acquire", 10.9, 37)]},
        {"id": "0xa4", "kind": "Queue", "state": "size 0/10", "tracked": True, "site": "start /srv/app/jobs.py:8", "created": NOW - 50, "age": 50.0, "size": 0, "maxsize": 10,
         "holders": [], "holders_known": True, "waiters": [_ref("0x1005", "consumer", "get", 45.0, 19)]},
        {"id": "0xa5", "kind": "Event", "state": "clear", "tracked": False, "site": None, "created": None, "age": None, "is_set": False,
         "holders": [], "holders_known": True, "waiters": []},
    ]}


def deadlocks_shape() -> dict[str, Any]:
    def edge(t: dict[str, Any], obj: str, site: int, holder: dict[str, Any]) -> dict[str, Any]:
        return {"task": t, "object_kind": "Lock", "object_id": obj, "object_label": f"Lock (created at /srv/app/locks.py:{site})", "held_by": holder}

    return {
        "cycles": [
            {"edges": [edge(_ref("0x1002", "right", "acquire", 12.4, 29), "0xa1", 40, _ref("0x1001", "left", "holder", 12.5)),
                       edge(_ref("0x1001", "left", "acquire", 12.4, 20), "0xa2", 41, _ref("0x1002", "right", "holder", 12.5))],
             "summary": "'right' -> 'left' -> 'right'", "for_s": 12.4},
            {"edges": [{"task": _ref("0x1006", "ping", "await", None, 13), "object_kind": "task", "object_id": "0x1007", "object_label": "task 'pong'", "held_by": None},
                       {"task": _ref("0x1007", "pong", "await", None, 19), "object_kind": "task", "object_id": "0x1006", "object_label": "task 'ping'", "held_by": None}],
             "summary": "'ping' -> 'pong' -> 'ping'", "for_s": None},
        ],
        "suspects": [
            {"kind": "held-by-finished", "summary": "heuristic: Lock (created at /srv/app/locks.py:42) is held by a task that has finished without releasing it: 'leaker' (done)",
             "object_id": "0xa3", "tasks": [_ref("0x1003", "leaker", "holder", 11.0, state="done")]},
            {"kind": "unreferenced-wait", "summary": "heuristic: 1 task(s) wait on Queue (created at /srv/app/jobs.py:8) that no other live task references (only coroutine frames were searched, not callbacks or threads)",
             "object_id": "0xa4", "tasks": [_ref("0x1005", "consumer", "get", 45.0, 19)]},
        ],
        "tasks": 30, "edges": 7, "notes": [],
    }


def groups_shape() -> dict[str, Any]:
    return {"groups": [
        {"id": "0xg1", "kind": "asyncio.TaskGroup", "state": "open", "site": "main /srv/app/app.py:50", "created": NOW - 20, "age": 20.0, "parent_id": "0x1000", "parent_name": "conn-0",
         "children": [_ref("0x1001", "worker-1", "child", 20.0), _ref("0x1002", "worker-2", "child", 20.0), _ref("0x1009", "quick", "child", 19.0, state="done")], "finished_dropped": 0},
        {"id": "0xg2", "kind": "asyncio.TaskGroup", "state": "closing (waiting for children)", "site": "worker /srv/app/app.py:36", "created": NOW - 19, "age": 19.0,
         "parent_id": "0x1001", "parent_name": "worker-1", "children": [_ref("0x1003", "worker-3", "child", 19.0)], "finished_dropped": 2},
    ]}


def asyncgens_shape() -> dict[str, Any]:
    frame = {"function": "ticker", "filename": "/srv/app/gens.py", "lineno": 16, "source": None, "locals": None}
    return {"asyncgens": [
        {"id": "0xag1", "name": "ticker", "state": "suspended", "site": "main /srv/app/gens.py:44", "created": NOW - 8, "age": 8.0, "frame": frame, "owner_id": "0x1000", "owner_name": "conn-0", "loop_id": "0xloop"},
        {"id": "0xag2", "name": "done_gen", "state": "closed", "site": "main /srv/app/gens.py:46", "created": NOW - 8, "age": 8.0, "frame": None, "owner_id": "0x1000", "owner_name": "conn-0", "loop_id": "0xloop"},
    ]}


WAITS = {"primitives.list": primitives_shape, "graph.deadlocks": deadlocks_shape, "groups.list": groups_shape, "asyncgens.list": asyncgens_shape}


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

    def __init__(self, rows: list[list[Any]] | None = None, *, allow_cancel: bool = False, health: dict[str, Any] | None = None, blocked: bool = False, waits: bool = True) -> None:
        self.rows = rows if rows is not None else make_tasks()
        self.waits = waits
        #: ``[id, steps, busy, longest, first_step]`` to send as ``changed`` in the next delta
        self.changes: list[list[Any]] = []
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
            changed, self.changes = self.changes, []
            return {"cursor": "c", "reset": first, "more": False, "columns": COLUMNS, "added": self.rows if first else [], "removed": [], "changed": changed,
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
        if method in WAITS and self.waits:
            return WAITS[method]()
        if method == "health":
            if self.health_data is None:
                raise RemoteError(METHOD_NOT_FOUND, "method not found: 'health'")
            return self.health_data
        raise RemoteError(METHOD_NOT_FOUND, f"method not found: {method!r}")

    def close(self) -> None:
        pass
