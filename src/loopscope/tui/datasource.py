"""Where ``loopscope top`` gets its data: a local mirror of the task list.

Why a mirror and not the agent's paging: ``tasks.list`` sorts and filters
inside the monitored process, and at 100,000 tasks one such query holds the
program's GIL for 0.2–0.8 s (measured; see docs/architecture.md).  Doing
that for every key press and every refresh would blow both budgets of the
TUI (150 ms per action, 5 % observer effect).  So the TUI keeps a copy of
the *cheap columns* of every live task and sorts, filters and groups that
copy itself; the agent's ``tasks.delta`` sends only the tasks this client
does not hold yet and the ids of those that ended, so after the first load
(in chunks) a refresh carries a few rows, not 100,000.

Everything expensive per task (stacks, awaiters, creation chains, locals)
is fetched for one task at a time, on request (``task``).

Nothing here touches Textual: the app calls these from worker threads, and
tests drive them directly.  ``Backend`` is the only thing that talks to a
process or a file; tests substitute a small fake for it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..client.connection import Connection, RemoteError, pid_alive
from ..client.errors import ClientError
from ..client.source import DumpSource, open_target
from ..protocol import METHOD_NOT_FOUND
from ..query import QueryError, parse_duration

#: How many new tasks one ``tasks.delta`` call may carry: the first load of
#: a big process comes in chunks, so no single answer is tens of megabytes.
CHUNK = 20_000

SORT_KEYS = ("age", "name", "coro", "state", "site", "id", "busy", "switches", "longest")
#: Sort keys on step counters: largest first by default (the busiest on top),
#: as in ``tasks.list``; ``steps`` is accepted for ``switches``.
NUMERIC_KEYS = {"busy": "busy", "switches": "steps", "steps": "steps", "longest": "longest"}
GROUP_KEYS = ("site", "name", "coro", "state")


class Backend(Protocol):
    """One monitored process or one dump file, as JSON-RPC calls."""

    kind: str
    label: str

    def call(self, method: str, params: dict[str, Any]) -> Any: ...
    def close(self) -> None: ...


class AgentBackend:
    """A live agent.  One connection, shared by worker threads under a lock
    (the protocol is strictly request/answer on one socket)."""

    kind = "agent"

    def __init__(self, path: str, pid: int | None, timeout: float = 10.0) -> None:
        self.conn = Connection(path, pid, timeout=timeout)
        self.hello = self.conn.hello()
        self.pid = self.hello.get("pid", pid)
        self.label = f"pid {self.pid}"
        self._lock = threading.Lock()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        with self._lock:
            return self.conn.call(method, params)

    def alive(self) -> bool:
        return self.pid is None or pid_alive(int(self.pid))

    def close(self) -> None:
        self.conn.close()


class DumpBackend:
    """A dump file, answering the same calls as an agent would."""

    kind = "dump"

    def __init__(self, path: str) -> None:
        self.src = DumpSource(path)
        self.path = path
        self.label = self.src.label
        self.hello = self.src.hello()
        self._sent = False

    def call(self, method: str, params: dict[str, Any]) -> Any:
        from ..model import to_json
        from ..query import TaskFilter

        if method == "hello":
            return self.hello
        if method == "tasks.delta":
            first = not self._sent
            self._sent = True
            tasks = self.src.snap.tasks if first else []
            sites = {str(t.site_id): t.site or "" for t in tasks if t.site_id is not None}
            return {
                "cursor": "dump",
                "reset": first,
                "more": False,
                "columns": [*COLUMNS, *STAT_COLUMNS],
                "changed": [],
                "added": [[t.id, t.name, t.coro, t.state, t.created, t.site_id, t.parent_id, t.parent_name, t.loop_id, t.steps, t.busy, t.longest, t.first_step] for t in tasks],
                "removed": [],
                "sites": sites,
                "running": [],
                "total": len(self.src.snap.tasks),
                "loops": to_json(self.src.snap.hello.loops),
            }
        if method == "tasks.get":
            return self.src.task(params["task"], bool(params.get("locals")))
        if method == "history.list":
            return self.src.history(params.get("kind", "all"), TaskFilter(), None, params.get("limit"), True)
        if method == "health":
            with open(self.path, "rb") as f:
                health = json.load(f).get("health")
            if health is None:
                raise RemoteError(METHOD_NOT_FOUND, "this dump has no health data")
            return health
        if method in WAIT_METHODS:
            part = WAIT_METHODS[method][0]
            data = getattr(self.src.snap, part, None)
            if data is None:
                raise RemoteError(METHOD_NOT_FOUND, f"this dump has no {part} (written by a loopscope without them, or with LOOPSCOPE_PRIMITIVES=0)")
            data = to_json(data)
            return data if part == "deadlocks" else {part: data}
        if method == "tasks.cancel":
            raise ClientError("a dump file is a snapshot: its tasks cannot be cancelled")
        raise RemoteError(METHOD_NOT_FOUND, f"method not found: {method!r}")

    def close(self) -> None:
        pass


def open_backend(target: str) -> AgentBackend | DumpBackend:
    """A pid, agent socket path or dump file, with ``open_target``'s errors."""
    src = open_target(target)
    if isinstance(src, DumpSource):
        return DumpBackend(target)
    path, pid = src.conn.path, src.pid
    src.close()
    return AgentBackend(path, pid)


COLUMNS = ("id", "name", "coro", "state", "created", "site_id", "parent_id", "parent_name", "loop_id")
#: Sent by agents that know ``stats: true`` (step counters; None when the
#: loop has no step hook, e.g. uvloop, or the task never ran).
STAT_COLUMNS = ("steps", "busy", "longest", "first_step")


@dataclass(slots=True)
class Row:
    """The cheap columns of one live task: what sorting, filtering and
    grouping need, and nothing that has to be walked (stacks…)."""

    id: str
    name: str
    coro: str
    state: str
    created: float | None
    site: str | None
    parent_name: str | None
    loop_id: str
    steps: int | None = None
    busy: float | None = None
    longest: float | None = None
    first_step: float | None = None

    def age(self, now: float) -> float | None:
        return None if self.created is None else max(0.0, now - self.created)


class Mirror:
    """Every live task's cheap columns, kept current by ``tasks.delta``."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.sites: dict[str, str] = {}
        self.cursor: str | None = None
        self.total = 0
        self.loops: list[dict[str, Any]] = []
        self.running: set[str] = set()
        #: bumped on every change, so views know when to recompute
        self.version = 0
        #: bumped when step counters (busy, switches) of held rows moved
        self.stats_version = 0
        #: False until an answer carried step counters (older agents, uvloop
        #: dumps without them): the columns then stay empty
        self.has_stats = False

    def apply(self, delta: dict[str, Any]) -> bool:
        """Apply one answer; True when the set of rows changed."""
        changed = False
        if delta.get("reset"):
            if self.rows:
                changed = True
            self.rows = {}
        self.cursor = delta.get("cursor")
        self.sites.update(delta.get("sites") or {})
        for tid in delta.get("removed") or ():
            if self.rows.pop(tid, None) is not None:
                changed = True
        index = {name: i for i, name in enumerate(delta.get("columns") or COLUMNS)}
        i_id, i_name, i_coro, i_state = index["id"], index["name"], index["coro"], index["state"]
        i_created, i_site, i_pname, i_loop = index["created"], index["site_id"], index["parent_name"], index["loop_id"]
        sites = self.sites
        i_steps = index.get("steps")
        if i_steps is not None:
            self.has_stats = True
            i_busy, i_longest, i_first = index["busy"], index["longest"], index["first_step"]
        for raw in delta.get("added") or ():
            site_id = raw[i_site]
            row = Row(
                raw[i_id], raw[i_name], raw[i_coro], raw[i_state], raw[i_created],
                sites.get(str(site_id)) if site_id is not None else None, raw[i_pname], raw[i_loop],
            )
            if i_steps is not None:
                row.steps, row.busy, row.longest, row.first_step = raw[i_steps], raw[i_busy], raw[i_longest], raw[i_first]
            self.rows[raw[i_id]] = row
            changed = True
        moved = False
        rows = self.rows
        for tid, steps, busy, longest, first in delta.get("changed") or ():
            r = rows.get(tid)
            if r is not None:
                r.steps, r.busy, r.longest, r.first_step = steps, busy, longest, first
                moved = True
        if moved:
            self.stats_version += 1
        running = set(delta.get("running") or ())
        if running != self.running:
            for tid in self.running - running:
                if (r := self.rows.get(tid)) is not None and r.state == "running":
                    r.state = "pending"
            for tid in running:
                if (r := self.rows.get(tid)) is not None:
                    r.state = "running"
            self.running = running
            changed = True
        self.total = int(delta.get("total", len(self.rows)))
        self.loops = delta.get("loops") or self.loops
        if changed:
            self.version += 1
        return changed


# -- filtering, sorting, grouping over the mirror ------------------------------------------


@dataclass
class RowFilter:
    """The ``/`` filter: ``name=GLOB coro=GLOB state=a,b site=TEXT age=5s busy=10ms``;
    a bare word matches as a substring of the name, coroutine or site."""

    text: str = ""
    tests: list[Callable[[Row, float], bool]] = field(default_factory=list)

    @property
    def uses_stats(self) -> bool:
        return "busy=" in self.text

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        tests: list[Callable[[Row, float], bool]] = []
        for word in text.split():
            key, sep, value = word.partition("=")
            if not sep:
                needle = word.lower()
                tests.append(lambda r, _n, w=needle: w in r.name.lower() or w in r.coro.lower() or w in (r.site or "").lower())
            elif key in ("name", "coro"):
                match = re.compile(fnmatch.translate(value)).match
                tests.append(lambda r, _n, m=match, k=key: m(getattr(r, k)) is not None)
            elif key == "site":
                pattern = value if any(c in value for c in "*?[") else f"*{value}*"
                match = re.compile(fnmatch.translate(pattern)).match
                tests.append(lambda r, _n, m=match: m(r.site or "") is not None)
            elif key == "state":
                states = frozenset(value.split(","))
                tests.append(lambda r, _n, s=states: r.state in s)
            elif key in ("age", "min_age"):
                try:
                    min_age = parse_duration(value)
                except ValueError as e:
                    raise QueryError(str(e)) from None
                tests.append(lambda r, now, a=min_age: r.created is not None and now - r.created >= a)
            elif key == "busy":
                try:
                    min_busy = parse_duration(value)
                except ValueError as e:
                    raise QueryError(str(e)) from None
                tests.append(lambda r, _n, b=min_busy: r.busy is not None and r.busy >= b)
            else:
                raise QueryError(f"unknown filter field {key!r} (name, coro, state, site, age, busy)")
        return cls(text, tests)

    def matches(self, row: Row, now: float) -> bool:
        return all(t(row, now) for t in self.tests)


def _sort_key(key: str) -> Callable[[Row], Any]:
    if key in NUMERIC_KEYS:
        attr = NUMERIC_KEYS[key]
        # unknown (never ran, or no step hook) sorts after every measured task
        return lambda r: -1.0 if (v := getattr(r, attr)) is None else v
    if key == "age":
        inf = float("inf")
        return lambda r: r.created if r.created is not None else inf
    if key == "site":
        return lambda r: r.site or "\uffff"
    return lambda r: getattr(r, key)


def select(rows: Iterable[Row], flt: RowFilter, sort: str, now: float) -> list[Row]:
    """Filtered and sorted rows.  ``age`` is oldest first; ``-`` reverses.

    A plain ``list.sort`` over 100,000 rows with a key function takes tens
    of milliseconds: cheaper than one round trip to an agent that would have
    to do the same work inside the monitored program.
    """
    desc = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in SORT_KEYS and key not in NUMERIC_KEYS:
        raise QueryError(f"cannot sort by {key!r} (one of: {', '.join(SORT_KEYS)})")
    chosen = list(rows)
    for test in flt.tests:  # each condition narrows the list for the next
        chosen = [r for r in chosen if test(r, now)]
    # numeric keys: largest first unless reversed ("-busy": least busy first)
    chosen.sort(key=_sort_key(key), reverse=desc != (key in NUMERIC_KEYS))
    return chosen


@dataclass(slots=True)
class Group:
    """Rows sharing one value of the group-by column."""

    key: str
    count: int
    oldest: float | None
    rows: list[Row]


def group_rows(rows: list[Row], by: str, limit: int | None = None) -> list[Group]:
    """Groups, biggest first (ties alphabetical), each keeping its rows in
    the order given (so a group expands in the current sort order)."""
    if by not in GROUP_KEYS:
        raise QueryError(f"cannot group by {by!r} (one of: {', '.join(GROUP_KEYS)})")
    buckets: dict[str, list[Row]] = {}
    oldest: dict[str, float] = {}
    inf = float("inf")
    for r in rows:
        k = getattr(r, by) or "(unknown)"
        b = buckets.get(k)
        if b is None:
            buckets[k] = [r]
        else:
            b.append(r)
        c = r.created
        if c is not None and c < oldest.get(k, inf):
            oldest[k] = c
    keys = sorted(buckets)
    keys.sort(key=lambda k: len(buckets[k]), reverse=True)  # stable: ties stay alphabetical
    return [Group(k, len(buckets[k]), oldest.get(k), buckets[k]) for k in keys[:limit]]


# -- the session: one backend, its mirror, and the calls the screens make --------------------


class HealthUnavailable(Exception):
    """The agent (or dump) has no ``health`` method or data."""


class Unavailable(HealthUnavailable):
    """The agent (or dump) has no such method or data (an older agent, or
    primitive tracking off): the screen says so instead of failing."""


#: the "what waits for what" calls: method -> (dump part / answer key, label)
WAIT_METHODS = {
    "primitives.list": ("primitives", "primitives"),
    "graph.deadlocks": ("deadlocks", "deadlock detection"),
    "groups.list": ("groups", "task groups"),
    "asyncgens.list": ("asyncgens", "async generators"),
}


class TopData:
    """What one ``top`` session knows: thread-safe enough for one poller
    thread plus one-off calls (detail, cancel) from other workers."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        self.mirror = Mirror()
        hello = getattr(backend, "hello", None)
        self.hello: dict[str, Any] = hello if isinstance(hello, dict) else backend.call("hello", {})
        #: wall time of the last refresh (all its calls), as this client saw it
        self.last_call_s = 0.0
        #: what the last refresh cost the program: the CPU time the agent
        #: reported for its answers (``cpu``), or the wall time when it does
        #: not report it.  The wall time also counts the waits for the
        #: program's GIL, which cost the program nothing and, when its loop
        #: thread keeps taking the GIL back, last seconds.
        self.last_cost_s = 0.0
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.backend.kind

    @property
    def label(self) -> str:
        return self.backend.label

    @property
    def can_cancel(self) -> bool:
        return self.backend.kind == "agent" and "cancel" in (self.hello.get("permissions") or [])

    def now(self) -> float:
        """Ages are measured at the dump's time for a dump, else now."""
        if self.backend.kind == "dump":
            snap = getattr(self.backend, "src").snap
            return float(snap.taken_at)
        return self.clock()

    def refresh(self) -> bool:
        """Bring the mirror up to date; True if any row changed.

        Raises ClientError (e.g. the process died) for the app to show.
        """
        with self._lock:
            changed = False
            t0 = time.perf_counter()
            cost: float | None = 0.0
            while True:
                delta = self.backend.call("tasks.delta", {"cursor": self.mirror.cursor, "limit": CHUNK, "stats": True})
                changed = self.mirror.apply(delta) or changed
                cpu = delta.get("cpu")
                cost = cost + cpu if cost is not None and isinstance(cpu, (int, float)) else None
                if not delta.get("more"):
                    break
            self.last_call_s = time.perf_counter() - t0
            self.last_cost_s = self.last_call_s if cost is None else cost
            return changed

    def task(self, tid: str, locals_: bool = False) -> dict[str, Any]:
        return dict(self.backend.call("tasks.get", {"task": tid, "locals": locals_}))

    def cancel(self, tid: str) -> dict[str, Any]:
        if not self.can_cancel:
            raise ClientError("this agent does not allow cancelling tasks (start it with `loopscope run --allow-cancel`)")
        return dict(self.backend.call("tasks.cancel", {"task": tid, "message": "cancelled from loopscope top"}))

    def history(self, kind: str = "all", limit: int = 500) -> dict[str, Any]:
        return dict(self.backend.call("history.list", {"kind": kind, "limit": limit, "detail": True}))

    def health(self) -> dict[str, Any]:
        try:
            return dict(self.backend.call("health", {}))
        except RemoteError as e:
            if e.code == METHOD_NOT_FOUND:
                raise HealthUnavailable("health data not available from this agent") from None
            raise

    def waits(self, method: str) -> Any:
        """One of WAIT_METHODS: the answer (a dict; ``graph.deadlocks``'s
        report as is).  Raises Unavailable when the agent or dump lacks it."""
        try:
            return self.backend.call(method, {})
        except RemoteError as e:
            if e.code == METHOD_NOT_FOUND:
                what = WAIT_METHODS[method][1]
                src = "this dump" if self.backend.kind == "dump" else "this agent"
                detail = f": {e}" if self.backend.kind == "dump" else " (its loopscope is older than primitives and deadlock detection)"
                raise Unavailable(f"{what} not available from {src}{detail}") from None
            raise

    def close(self) -> None:
        self.backend.close()


def blocked_loops(loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [lp for lp in loops if lp.get("blocked")]


@dataclass
class TaskView:
    """What the Tasks screen shows: sort, filter, grouping, expanded groups.

    ``build`` is pure (rows in, items out) so it runs in a worker thread and
    in tests alike.  Items are ``Row``s, or ``Group``s followed (when the
    group is expanded) by at most ``per_group`` of its rows and a ``More``.
    """

    sort: str = "age"
    filter: RowFilter = field(default_factory=RowFilter)
    group_by: str | None = None
    expanded: set[str] = field(default_factory=set)
    per_group: int = 500
    max_groups: int = 5000

    def build(self, rows: Iterable[Row], now: float) -> tuple[list[Any], int]:
        """(items, number of tasks matched)."""
        chosen = select(rows, self.filter, self.sort, now)
        if not self.group_by:
            return chosen, len(chosen)
        items: list[Any] = []
        for g in group_rows(chosen, self.group_by, self.max_groups):
            items.append(g)
            if g.key in self.expanded:
                items.extend(g.rows[: self.per_group])
                if g.count > self.per_group:
                    items.append(More(g.key, g.count - self.per_group))
        return items, len(chosen)


@dataclass(slots=True)
class More:
    """Placeholder for the rows of a big group that are not listed."""

    key: str
    hidden: int
