"""The agent's JSON-RPC methods (documented in docs/protocol.md).

Every method runs in a server thread.  Listing methods first build the cheap
columns for every live task, filter/sort/page them with ``loopscope.query``,
and only then walk stacks for the page they return, so ``ps --limit 50`` on
100,000 tasks costs 100,000 cheap reads and 50 stack walks.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..model import DUMP_FORMAT, SCHEMA_VERSION, Hello, Snapshot, StatGroup, TaskInfo, TaskPage, to_json
from ..protocol import FORBIDDEN, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_FOUND, PROTOCOL_VERSION, RPCError
from ..query import QueryError, TaskFilter, group, parse_sort, select, select_history
from .introspect import task_id
from .loops import live_tasks
from .tracker import O_CREATED, O_FRAMES, _current_task

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
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.table = {
            "hello": self.hello,
            "tasks.list": self.tasks_list,
            "tasks.get": self.tasks_get,
            "tasks.graph": self.tasks_graph,
            "tasks.cancel": self.tasks_cancel,
            "history.list": self.history_list,
            "stats": self.stats,
            "snapshot": self.snapshot,
        }

    def call(self, method: str, params: dict[str, Any]) -> Any:
        fn = self.table.get(method)
        if fn is None:
            raise RPCError(METHOD_NOT_FOUND, f"method not found: {method!r}", {"methods": sorted(self.table)})
        try:
            return fn(params)
        except QueryError as e:
            raise RPCError(INVALID_PARAMS, str(e)) from None

    # -- helpers -------------------------------------------------------------

    def _live(self) -> tuple[list[tuple[TaskInfo, Any]], list[Any]]:
        """(light info, task) for every live task on every loop, + loop infos."""
        ag = self.agent
        now = time.monotonic()
        rows: list[tuple[TaskInfo, Any]] = []
        loops = []
        light = ag.introspector.light
        for loop, st in ag.loops.states():
            tasks = live_tasks(loop)
            current = _current_task(loop)
            for t in tasks:
                rows.append((light(t, st.id, current, now), t))
            loops.append(ag.loops.info(loop, st, live=len(tasks)))
        return rows, loops

    def _raw(self) -> tuple[list[tuple[Any, str, Any]], list[Any]]:
        """(task, loop id, loop's current task) for every live task: no
        per-task work beyond what all_tasks does."""
        ag = self.agent
        rows: list[tuple[Any, str, Any]] = []
        loops = []
        for loop, st in ag.loops.states():
            tasks = live_tasks(loop)
            current = _current_task(loop)
            rows.extend((t, st.id, current) for t in tasks)
            loops.append(ag.loops.info(loop, st, live=len(tasks)))
        return rows, loops

    def _page(self, flt: TaskFilter, sort: str | None, limit: int | None, offset: int) -> tuple[int, int, list[tuple[TaskInfo, Any]], list[Any]]:
        """(total, matched, page of (info, task), loops).

        Unfiltered pages sorted by age or creation time are picked with a
        heap on the raw creation time, so only the page's rows are built:
        ``ps --sort age --limit 50`` on 100,000 tasks builds 50 records.
        """
        key, desc = parse_sort(sort)
        if offset < 0 or (limit is not None and limit < 0):
            raise RPCError(INVALID_PARAMS, "limit and offset must not be negative")
        if not flt.to_params() and limit is not None and key in ("age", "created"):
            rows, loops = self._raw()
            origin_of = self.agent.tracker.origin_of
            inf = float("inf")
            oldest_first = desc if key == "age" else not desc

            def created(row: tuple[Any, str, Any]) -> float:
                o = origin_of(row[0])
                if o is None:
                    return inf
                return o[O_CREATED] if oldest_first else -o[O_CREATED]

            picked = heapq.nsmallest(offset + limit, rows, key=created)[offset:]
            now = time.monotonic()
            light = self.agent.introspector.light
            return len(rows), len(rows), [(light(t, lid, cur, now), t) for t, lid, cur in picked], loops
        all_rows, loops = self._live()
        by_info = {id(info): task for info, task in all_rows}
        matched, page = select([r[0] for r in all_rows], flt, sort, limit, offset)
        return len(all_rows), matched, [(info, by_info[id(info)]) for info in page], loops

    def _find(self, ref: Any) -> tuple[TaskInfo, Any]:
        if not isinstance(ref, str) or not ref:
            raise RPCError(INVALID_PARAMS, "task: expected a task id (0x…) or name")
        rows, _ = self._live()
        by_id = [r for r in rows if r[0].id == ref]
        if by_id:
            return by_id[0]
        by_name = [r for r in rows if r[0].name == ref]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            ids = ", ".join(r[0].id for r in by_name[:5])
            raise RPCError(INVALID_PARAMS, f"{len(by_name)} live tasks are named {ref!r}; use an id ({ids}…)")
        raise RPCError(NOT_FOUND, f"no live task {ref!r}")

    # -- methods -------------------------------------------------------------

    def hello(self, params: dict[str, Any]) -> Any:
        ag = self.agent
        loops = [ag.loops.info(loop, st) for loop, st in ag.loops.states()]
        perms = ["read"] + (["cancel"] if ag.config.allow_cancel else [])
        return to_json(
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
        if detail == "stacks":
            for info, task in page:
                self.agent.introspector.fill(info, task)
        return to_json(TaskPage(total=total, matched=matched, tasks=[p[0] for p in page], loops=loops))

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
            return to_json(hist)
        self.agent.introspector.fill(info, task, source=True, locals_=want_locals)
        return to_json(info)

    def tasks_graph(self, params: dict[str, Any]) -> Any:
        """Every live task with its own stack and awaiters: ps/pstree input."""
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        sort = _param(params, "sort", str)
        limit = _param(params, "limit", int)
        total, matched, page, loops = self._page(flt, sort, limit, 0)
        fill = self.agent.introspector.fill
        for info, task in page:
            fill(info, task, awaiter_stacks=False)
        return to_json(TaskPage(total=total, matched=matched, tasks=[p[0] for p in page], loops=loops))

    def tasks_cancel(self, params: dict[str, Any]) -> Any:
        if not self.agent.config.allow_cancel:
            raise RPCError(FORBIDDEN, "this agent does not allow cancelling tasks (start it with allow_cancel / LOOPSCOPE_ALLOW_CANCEL=1)")
        msg = _param(params, "message", str)
        info, task = self._find(params.get("task"))
        loop = task.get_loop()
        loop.call_soon_threadsafe(task.cancel, msg or "cancelled from loopscope")
        return {"task": info.id, "scheduled": True}

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
        return {"total": len(infos), "matched": matched, "tasks": to_json(page)}

    def stats(self, params: dict[str, Any]) -> Any:
        by = _param(params, "by", str, "site") or "site"
        flt = TaskFilter.from_params(_param(params, "filter", dict, {}))
        if by == "site" and not flt.to_params():
            return self._stats_by_site()
        rows, loops = self._live()
        groups = group((r[0] for r in rows), by, flt)
        return {"by": by, "total": len(rows), "groups": to_json(groups), "loops": to_json(loops)}

    def _stats_by_site(self) -> Any:
        """Group on the raw (code, offset) of each origin: no records built."""
        rows, loops = self._raw()
        origin_of = self.agent.tracker.origin_of
        acc: dict[Any, list[Any]] = {}
        for task, _lid, _cur in rows:
            o = origin_of(task)
            frames = o[O_FRAMES] if o is not None else ()
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
        return {"by": "site", "total": len(rows), "groups": to_json(groups), "loops": to_json(loops)}

    def snapshot(self, params: dict[str, Any]) -> Any:
        return to_json(self.agent.snapshot())


def build_snapshot(agent: Agent) -> Snapshot:
    """Everything, in detail: the content of a dump file."""
    methods = agent.methods
    hello = methods.hello({})
    rows, _ = methods._live()
    fill = agent.introspector.fill
    tasks = []
    for info, task in rows:
        try:
            tasks.append(fill(info, task, source=True, awaiter_stacks=False))
        except Exception as e:  # noqa: BLE001 - one odd task must not lose the dump
            agent.tracker.note_error(e)
            tasks.append(info)
    now = time.monotonic()
    history = [agent.introspector.history_info(e, now, detail=True, source=True) for e in agent.tracker.history()]
    from ..model import from_json

    return Snapshot(
        format=DUMP_FORMAT,
        schema=SCHEMA_VERSION,
        taken_at=time.time(),
        hello=from_json(Hello, hello),
        tasks=tasks,
        history=history,
    )


def task_ref(task: asyncio.Task) -> str:  # small helper for tests and plugins
    return task_id(task)
