"""The agent's JSON-RPC methods (documented in docs/protocol.md).

Every method runs in a server thread.  Listing methods first build the cheap
columns for every live task, filter/sort/page them with ``loopscope.query``,
and only then walk stacks for the page they return, so ``ps --limit 50`` on
100,000 tasks costs 100,000 cheap reads and 50 stack walks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..model import DUMP_FORMAT, SCHEMA_VERSION, Hello, LoopInfo, StatGroup, TaskInfo
from ..protocol import FORBIDDEN, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_FOUND, PROTOCOL_VERSION, RawJSON, RawJSONList, RPCError, dumps_piecewise, dumps_row
from ..query import QueryError, TaskFilter, parse_sort, pick, ranked_groups, select_history, sort_key
from .health import health_report
from .introspect import task_id
from .loops import live_tasks
from .mirror import Changes, Cursor, advance
from .tracker import O_CREATED, _current_task, origin_frames

if TYPE_CHECKING:
    from .core import Agent

HISTORY_KINDS = ("all", "done", "failed", "cancelled")


def _param(params: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
    value = params.get(name, default)
    if value is None or value is default:
        return value
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RPCError(INVALID_PARAMS, f"{name}: wrong type")
    if not isinstance(value, types):
        raise RPCError(INVALID_PARAMS, f"{name}: expected {getattr(types, '__name__', types)}")
    return value


class Methods:
    #: Mirrors kept for ``tasks.delta`` clients; the oldest is dropped past
    #: this (its client then gets a full reset, never a wrong answer).
    MAX_CURSORS = 8

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        # cursor -> what that client holds (mirror.Cursor)
        self._cursors: dict[str, Cursor] = {}
        self._cursor_seq = itertools.count(1)
        self.table = {
            "hello": self.hello,
            "tasks.list": self.tasks_list,
            "tasks.get": self.tasks_get,
            "tasks.graph": self.tasks_graph,
            "tasks.cancel": self.tasks_cancel,
            "tasks.delta": self.tasks_delta,
            "history.list": self.history_list,
            "stats": self.stats,
            "snapshot": self.snapshot,
            "health": self.health,
        }
        from .waitgraph import rpc_methods  # primitives, deadlocks, groups, asyncgens

        self.table.update(rpc_methods(agent))

    def call(self, method: str, params: dict[str, Any]) -> Any:
        fn = self.table.get(method)
        if fn is None:
            raise RPCError(METHOD_NOT_FOUND, f"method not found: {method!r}", {"methods": sorted(self.table)})
        try:
            return fn(params)
        except QueryError as e:
            raise RPCError(INVALID_PARAMS, str(e)) from None

    # -- helpers -------------------------------------------------------------

    def _raw(self) -> tuple[list[tuple[str, Any, list[Any]]], list[LoopInfo]]:
        """Per loop: (loop id, its current task, its live tasks), + loop infos.

        Nothing per task is allocated here beyond what all_tasks does.
        """
        ag = self.agent
        groups = []
        loops = []
        for loop, st in ag.loops.states():
            tasks = live_tasks(loop)
            groups.append((st.id, _current_task(loop), tasks))
            loops.append(ag.loops.info(loop, st, live=len(tasks)))
        return groups, loops

    def _infos(self, groups: list[tuple[str, Any, list[Any]]]) -> Iterator[tuple[TaskInfo, Any]]:
        """Light records, one at a time: each is garbage by the next step,
        so 100,000 of them never live at once (see _page)."""
        now = time.monotonic()
        light = self.agent.introspector.light
        for lid, cur, tasks in groups:
            for t in tasks:
                yield light(t, lid, cur, now), t

    def _page(self, flt: TaskFilter, sort: str | None, limit: int | None, offset: int) -> tuple[int, int, list[Any], list[LoopInfo]]:
        """(total, matched, the page's tasks, loops).

        Only (sort key, index) pairs survive the scan: keeping 100,000
        records alive would trigger full garbage collections, which run in
        our thread while holding the GIL and stall the loop for 100+ ms.
        Unfiltered age/creation sorts read the raw creation time directly.
        """
        key, desc = parse_sort(sort)
        groups, loops = self._raw()
        flat = [t for _lid, _cur, tasks in groups for t in tasks]
        total = len(flat)
        if not flt.to_params() and key in ("age", "created"):
            created_of = self.agent.tracker.created_of
            inf = float("inf")
            # parse_sort: "age" is descending age, "created" ascending time;
            # both mean oldest first.  Untracked tasks (inf) always sort last.
            oldest_first = desc if key == "age" else not desc
            keys: list[float] = []
            for t in flat:
                c = created_of(t)
                if c is None:
                    keys.append(inf)
                else:
                    keys.append(c if oldest_first else -c)
            idx = pick(keys, limit, offset, False)
            matched = total
        else:
            keyfn, reverse = sort_key(sort)
            skeys: list[Any] = []
            where: list[int] = []
            for i, (info, _t) in enumerate(self._infos(groups)):
                if flt.matches(info):
                    skeys.append(keyfn(info))
                    where.append(i)
            matched = len(where)
            idx = [where[j] for j in pick(skeys, limit, offset, reverse)]
        return total, matched, [flat[i] for i in idx], loops

    def _emit(self, tasks: list[Any], **fill: Any) -> RawJSONList:
        """Build, fill and encode one record at a time; keep only the text.

        The text is a str, which the garbage collector does not track, so a
        page of 100,000 tasks never means 100,000 live records (nor 100,000
        tuples holding tasks: rows are plain task lists for the same reason).
        """
        out = RawJSONList()
        light = self.agent.introspector.light
        fill_fn = self.agent.introspector.fill
        now = time.monotonic()
        currents: dict[int, Any] = {}
        alive = self._alive() if tasks else {}
        for task in tasks:
            loop = task.get_loop()
            key = id(loop)
            if key not in currents:
                currents[key] = _current_task(loop)
            info = light(task, hex(key), currents[key], now, alive)
            if fill:
                try:
                    fill_fn(info, task, alive=alive, **fill)
                except Exception as e:  # noqa: BLE001 - one odd task must not fail the page
                    self.agent.tracker.note_error(e)
            out.append(dumps_piecewise(info))
        return out

    def _alive(self) -> dict[int, Any]:
        """Live tasks by id, to show a parent's name as it is now: on
        3.12/3.13 an eager task gets its name only after its first step,
        when its children already recorded "Task-N"."""
        return {id(t): t for _lid, _cur, tasks in self._raw()[0] for t in tasks}

    def _find(self, ref: Any) -> tuple[TaskInfo, Any]:
        if not isinstance(ref, str) or not ref:
            raise RPCError(INVALID_PARAMS, "task: expected a task id (0x…) or name")
        groups, _ = self._raw()
        hits = []
        for lid, cur, tasks in groups:
            for t in tasks:
                if hex(id(t)) == ref:
                    return self.agent.introspector.light(t, lid, cur, time.monotonic()), t
                if t.get_name() == ref:
                    hits.append((lid, cur, t))
        if len(hits) == 1:
            lid, cur, t = hits[0]
            return self.agent.introspector.light(t, lid, cur, time.monotonic()), t
        if len(hits) > 1:
            ids = ", ".join(hex(id(h[2])) for h in hits[:5])
            raise RPCError(INVALID_PARAMS, f"{len(hits)} live tasks are named {ref!r}; use an id ({ids}…)")
        raise RPCError(NOT_FOUND, f"no live task {ref!r}")

    # -- methods -------------------------------------------------------------

    def hello(self, params: dict[str, Any]) -> Any:
        ag = self.agent
        loops = [ag.loops.info(loop, st) for loop, st in ag.loops.states()]
        perms = ["read"] + (["cancel"] if ag.config.allow_cancel else [])
        return (
            Hello(
                protocol=PROTOCOL_VERSION,
                schema=SCHEMA_VERSION,
                agent_version=__version__,
                python=platform.python_version(),
                implementation=sys.implementation.name,
                pid=os.getpid(),
                argv=list(sys.argv),
                started=ag.started,
                loops=loops,
                permissions=perms,
                socket=ag.server.path if ag.server else None,
            )
        )

    def tasks_list(self, params: dict[str, Any]) -> Any:
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        sort = _param(params, "sort", str)
        limit = _param(params, "limit", int)
        offset = _param(params, "offset", int, 0) or 0
        detail = _param(params, "detail", str, "summary") or "summary"
        if detail not in ("summary", "stacks"):
            raise RPCError(INVALID_PARAMS, "detail: 'summary' or 'stacks'")
        total, matched, page, loops = self._page(flt, sort, limit, offset)
        tasks = self._emit(page) if detail == "summary" else self._emit(page, awaiter_stacks=True)
        return {"total": total, "matched": matched, "tasks": tasks, "loops": loops}

    def tasks_get(self, params: dict[str, Any]) -> Any:
        ref = params.get("task")
        want_locals = bool(_param(params, "locals", bool, False))
        try:
            info, task = self._find(ref)
        except RPCError as e:
            if e.code != NOT_FOUND:
                raise
            hist = self._history_find(ref)
            if hist is None:
                raise
            return hist
        self.agent.introspector.fill(info, task, source=True, locals_=want_locals)
        return info

    def tasks_graph(self, params: dict[str, Any]) -> Any:
        """Every live task with its own stack and awaiters: ps/pstree input."""
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        sort = _param(params, "sort", str)
        limit = _param(params, "limit", int)
        total, matched, page, loops = self._page(flt, sort, limit, 0)
        return {"total": total, "matched": matched, "tasks": self._emit(page, awaiter_stacks=True), "loops": loops}

    def tasks_cancel(self, params: dict[str, Any]) -> Any:
        if not self.agent.config.allow_cancel:
            raise RPCError(FORBIDDEN, "this agent does not allow cancelling tasks (start it with allow_cancel / LOOPSCOPE_ALLOW_CANCEL=1)")
        msg = _param(params, "message", str)
        info, task = self._find(params.get("task"))
        loop = task.get_loop()
        loop.call_soon_threadsafe(task.cancel, msg or "cancelled from loopscope")
        return {"task": info.id, "scheduled": True}

    def tasks_delta(self, params: dict[str, Any]) -> Any:
        """What changed since this client's last call: the mirror behind ``top``.

        Re-sorting 100,000 tasks in here once a second would cost the
        program a large share of its GIL; instead the client keeps a copy of
        the cheap columns and sorts, filters and groups it itself.  Each call
        sends only the tasks the client does not hold yet (at most
        ``limit``, so the first load comes in chunks) and the ids of those
        that ended or were freed.  A task is known by a weak reference to
        it, so an address reused by a new task is never mistaken for the
        old one, whether loopscope created the task or not.

        How the call finds that without a Python loop over the tasks is in
        ``mirror.py``: set differences of weak references against asyncio's
        own WeakSet (3.11–3.13) or ``all_tasks`` (3.14+), and busy times
        compared in C, which is also how an end is seen (a task finishes
        only in a step, and the step hook rewrites its busy time).

        With ``stats: true`` rows also carry the step counters (steps,
        busy, longest, first_step), and ``changed`` lists
        ``[id, steps, busy, longest, first_step]`` for held tasks that ran
        since this cursor last saw them.  At most ``limit`` changes go per
        call, taken in rotation, so a program whose 100,000 tasks all run
        every second costs bounded work per refresh; the rest follow in
        later calls.  A cursor asked with the other ``stats`` value is
        answered with a reset: the rows it holds lack (or carry) the
        counters.

        ``cpu`` is this thread's CPU time for the answer: what the call
        cost the program.  The client's wall time also counts waiting for
        the GIL, which a loop thread that keeps releasing and retaking it
        (``select`` every millisecond) can make last seconds; ``top``
        backs off from ``cpu``.
        """
        cpu0 = time.thread_time()
        key = _param(params, "cursor", str)
        limit = _param(params, "limit", int)
        if limit is not None and limit < 1:
            raise RPCError(INVALID_PARAMS, "limit must be positive")
        with_stats = bool(_param(params, "stats", bool, False))
        cur = self._cursors.pop(key, None) if key else None
        reset = cur is None or cur.stats != with_stats
        if cur is None or reset:
            cur = Cursor(with_stats)
        ag = self.agent
        states = ag.loops.states()
        timed = ag.tracker.recorded
        ch = advance(cur, states, timed, limit)
        key = f"{next(self._cursor_seq):x}"
        self._cursors[key] = cur
        while len(self._cursors) > self.MAX_CURSORS:
            self._cursors.pop(next(iter(self._cursors)))
        currents = {st: _current_task(loop) for loop, st in states}
        rows, sites = self._delta_rows(ch, currents, with_stats)
        held = {st: len(h) for st, h in cur.held.items()}
        loops = [ag.loops.info(loop, st, live=held.get(st, 0) + ch.unsent[st]) for loop, st in states]
        columns = ["id", "name", "coro", "state", "created", "site_id", "parent_id", "parent_name", "loop_id"]
        extra: dict[str, Any] = {}
        if with_stats:
            columns += ["steps", "busy", "longest", "first_step"]
            extra["changed"] = RawJSONList(ch.changed)
        return {
            "cursor": key,
            "reset": reset,
            "more": bool(ch.unsent),
            "columns": columns,
            "added": rows,
            **extra,
            "removed": [hex(i) for i in ch.removed],
            "sites": {str(k): v for k, v in sites.items()},
            "running": [hex(id(t)) for t in currents.values() if t is not None],
            "total": len(cur) + sum(ch.unsent.values()),
            "loops": loops,
            "cpu": time.thread_time() - cpu0,
        }

    def _delta_rows(self, ch: Changes, currents: dict[Any, Any], with_stats: bool) -> tuple[RawJSONList, dict[int, str]]:
        """Encoded rows of the new tasks, and the labels of their sites."""
        rows = RawJSONList()
        sites: dict[int, str] = {}
        row = self.agent.introspector.row
        for t, st in zip(ch.new_tasks, ch.new_states):
            values, site = row(t, st.id, currents.get(st), with_stats)
            if site is not None and site.id not in sites:
                sites[site.id] = site.label()
            rows.append(dumps_row(values))
        return rows, sites

    def _history(self, kind: str) -> list[tuple]:
        tr = self.agent.tracker
        if kind == "all":
            return tr.history()
        tr.harvest()
        ring = {"done": tr.done, "failed": tr.failed, "cancelled": tr.cancelled}[kind]
        return list(ring)

    def _history_find(self, ref: Any) -> TaskInfo | None:
        now = time.monotonic()
        for entry in reversed(self.agent.tracker.history()):
            if hex(entry[0]) == ref or entry[1] == ref:
                return self.agent.introspector.history_info(entry, now, detail=True, source=True)
        return None

    def history_list(self, params: dict[str, Any]) -> Any:
        kind = _param(params, "kind", str, "all") or "all"
        if kind not in HISTORY_KINDS:
            raise RPCError(INVALID_PARAMS, f"kind: one of {', '.join(HISTORY_KINDS)}")
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        limit = _param(params, "limit", int)
        sort = _param(params, "sort", str)
        detail = bool(_param(params, "detail", bool, False))
        now = time.monotonic()
        entries = self._history(kind)
        infos = [self.agent.introspector.history_info(e, now, detail) for e in entries]
        matched, page = select_history(infos, flt, sort, limit)
        res = {"total": len(infos), "matched": matched, "tasks": page}
        if kind in ("all", "done"):
            done = sum(m.done for m in list(self.agent.tracker.metrics.values()))
            res["done_not_kept"] = self.agent.tracker.done_not_kept(done)
        return res

    def stats(self, params: dict[str, Any]) -> Any:
        by = _param(params, "by", str, "site") or "site"
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        limit = _param(params, "limit", int)
        if limit is not None and limit < 0:
            raise RPCError(INVALID_PARAMS, "limit must not be negative")
        if by == "site" and not flt.to_params():
            return self._stats_by_site(limit)
        raw, loops = self._raw()
        total = sum(len(g[2]) for g in raw)
        ranked = ranked_groups((info for info, _t in self._infos(raw)), by, flt, limit)
        return {"by": by, "total": total, "groups": RawJSONList(dumps_piecewise(g) for g in ranked), "loops": loops}

    def _stats_by_site(self, limit: int | None) -> Any:
        """Group on the raw (code, offset) of each origin: no records built."""
        raw, loops = self._raw()
        origin_of = self.agent.tracker.origin_of
        acc: dict[Any, list[Any]] = {}
        total = 0
        for task in (t for g in raw for t in g[2]):
            total += 1
            o = origin_of(task)
            frames = origin_frames(o) if o is not None else ()
            key = (id(frames[0]), frames[1]) if frames else None
            g = acc.get(key)
            created = o[O_CREATED] if o is not None else None
            if g is None:
                acc[key] = [1, created, created, frames]
            else:
                g[0] += 1
                if created is not None:
                    if created < g[1]:
                        g[1] = created
                    if created > g[2]:
                        g[2] = created
        now = time.monotonic()
        groups = []
        for key, (count, oldest, newest, frames) in acc.items():
            site = self.agent.introspector.interner.site(frames) if frames else None
            groups.append(
                StatGroup(
                    site.label() if site else "(unknown: created before loopscope)",
                    count,
                    now - oldest if oldest is not None else None,
                    now - newest if newest is not None else None,
                    site.id if site else None,
                )
            )
        groups.sort(key=lambda g: (-g.count, g.key))
        return {"by": "site", "total": total, "groups": groups[:limit], "loops": loops}

    def health(self, params: dict[str, Any]) -> Any:
        top = _param(params, "top", int, 10)
        if top < 0 or top > 1000:
            raise RPCError(INVALID_PARAMS, "top: expected 0..1000")
        deadlocks = _param(params, "deadlocks", bool, True)
        return health_report(self.agent, top, deadlocks)

    def snapshot(self, params: dict[str, Any]) -> Any:
        return snapshot_json(self.agent)


def snapshot_json(agent: Agent) -> RawJSON:
    """Everything, in detail, as the JSON text of a Snapshot (a dump file).

    Built and encoded one task at a time, for the same reasons as _page.
    """
    methods = agent.methods
    hello = methods.hello({})
    groups, _ = methods._raw()
    tasks = methods._emit([t for _lid, _cur, ts in groups for t in ts], source=True, awaiter_stacks=False)
    now = time.monotonic()
    history = RawJSONList(
        dumps_piecewise(agent.introspector.history_info(e, now, detail=True, source=True)) for e in agent.tracker.history()
    )
    from .waitgraph import snapshot_parts

    return RawJSON(
        dumps_piecewise(
            {
                "format": DUMP_FORMAT,
                "schema": SCHEMA_VERSION,
                "taken_at": time.time(),
                "hello": hello,
                "tasks": tasks,
                "history": history,
                "health": health_report(agent),
                **snapshot_parts(agent),
            }
        )
    )


def task_ref(task: asyncio.Task) -> str:  # small helper for tests and plugins
    return task_id(task)
