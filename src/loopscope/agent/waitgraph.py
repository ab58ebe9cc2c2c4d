"""The wait-for graph: task -> (primitive | task | future) -> holder task.

Built on demand in the server thread (never on the loop), from

* each registered primitive's waiter deques (task -> primitive) and its
  recorded holders (primitive -> task), for primitives that cannot be taken
  right now (a locked Lock, a Semaphore at 0, a Condition's lock);
* each waiting task's ``_fut_waiter``: another task (await), a gather's
  children, a TaskGroup's children while its parent sits in ``__aexit__``;
* for tasks whose wait is not explained by those, a walk of the task's own
  coroutine frames for a primitive's ``acquire``/``wait``/``get``/``put``
  (objects made before the agent was installed).

A cycle is a deadlock: none of its tasks can go on.  ``find_cycles`` is the
entry point for a health check (``{"deadlocks": len(find_cycles(agent))}``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING, Any

from ..model import AsyncGenInfo, Deadlock, DeadlockReport, Frame, GroupInfo, PrimitiveInfo, Suspect, TaskRef, WaitEdge
from . import primitives as P
from .groups import group_children, group_finished, group_parent, group_state, loop_asyncgens
from .introspect import _walk, coro_frames
from .loops import live_tasks
from .tracker import O_CREATED

if TYPE_CHECKING:
    from .core import Agent

_ASYNCIO_DIR = P.ASYNCIO_DIR
HEURISTIC_TASK_LIMIT = 20_000
REFERENT_BUDGET = 200_000


def _oid(obj: Any) -> str:
    return hex(id(obj))


def _tstate(task: Any) -> str:
    if task is None:
        return "gone"
    if task.done():
        if task.cancelled():
            return "cancelled"
        return "failed" if task._exception is not None else "done"
    return "pending"


def _user_line(task: Any) -> Frame | None:
    """Innermost frame of the task outside asyncio/janus/anyio and loopscope."""
    try:
        frames = coro_frames(task.get_coro())
    except Exception:  # noqa: BLE001
        return None
    lib = P.LIBRARY_DIRS
    for f in frames:
        fn = f.filename
        if not fn.startswith(_ASYNCIO_DIR) and not (lib and fn.startswith(lib)):
            return f
    return frames[0] if frames else None


class View:
    """One consistent read of the process for one query."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.now = time.monotonic()
        self.tasks: list[Any] = []
        for loop, _st in agent.loops.states():
            self.tasks.extend(live_tasks(loop))
        self._lines: dict[int, Frame | None] = {}
        self._found: dict[int, Any] = {}  # untracked primitives found from waiters
        self._sites: dict[int, tuple] = {}

    def wall(self, mono: float | None) -> float | None:
        return None if mono is None else self.agent.tracker.wall(mono)

    def ref(self, task: Any, role: str | None = None, since: float | None = None, where: bool = False, tid: int | None = None) -> TaskRef:
        if task is None:
            name = self._history_name(tid) if tid is not None else None
            return TaskRef(hex(tid) if tid is not None else "?", name, "gone", role, self.wall(since), None if since is None else self.now - since)
        r = TaskRef(_oid(task), task.get_name(), _tstate(task), role, self.wall(since), None if since is None else max(0.0, self.now - since))
        if where and not task.done():
            key = id(task)
            if key not in self._lines:
                self._lines[key] = _user_line(task)
            r.where = self._lines[key]
        return r

    def _history_name(self, tid: int) -> str | None:
        for entry in reversed(self.agent.tracker.history()):
            if entry[0] == tid:
                return entry[1]
        return None

    # -- primitives ----------------------------------------------------------------

    def registered(self) -> list[tuple[Any, tuple | None]]:
        pt = self.agent.primitive_tracker
        return pt.live() if pt is not None else []

    def find_untracked(self, known: set[int]) -> None:
        """Primitives nobody registered, from the frames of waiting tasks."""
        for task in self.tasks:
            if task.done():
                continue
            fw = getattr(task, "_fut_waiter", None)
            if fw is None or isinstance(fw, asyncio.Task) or id(fw) in known:
                continue
            try:
                for _c, frame in reversed(list(_walk(task.get_coro()))):
                    obj = P.primitive_of_frame(frame)
                    if obj is not None:
                        self._found.setdefault(id(obj), obj)
                        break
            except Exception as e:  # noqa: BLE001
                self.agent.tracker.note_error(e)

    def all_primitives(self) -> list[tuple[Any, tuple | None]]:
        reg = self.registered()
        ids = {id(o) for o, _ in reg}
        known_futs: set[int] = set()
        for obj, _ in reg:
            for _role, dq in P.waiter_deques(obj):
                for f in dq or ():
                    known_futs.add(id(P.future_of(f)))
        self.find_untracked(known_futs)
        out = list(reg)
        for oid, obj in self._found.items():
            if oid not in ids:
                out.append((obj, None))
        return out

    def primitive_info(self, obj: Any, rec: tuple | None, where: bool = True) -> PrimitiveInfo:
        st = P.state_of(obj)
        info = PrimitiveInfo(id=_oid(obj), kind=(rec[0] if rec else P.kind_of(obj) or type(obj).__name__), state=st.get("text", "?"), tracked=rec is not None)
        info.locked, info.value, info.is_set = st.get("locked"), st.get("value"), st.get("set")
        info.size, info.maxsize = st.get("size"), st.get("maxsize")
        if rec is not None:
            if rec[1] is not None:
                info.site = self.agent.introspector.interner.site((rec[1], rec[2])).label()
            info.created = self.wall(rec[3])
            info.age = self.now - rec[3]
        holders, known = P.holders_of(obj)
        info.holders = [self.ref(t, "holder", since, where, tid) for t, since, tid in holders]
        info.holders_known = known
        info.waiters = [self.ref(t, role, since, where) for role, t, _f, since in P.waiters_of(obj)]
        return info

    def primitives(self) -> list[PrimitiveInfo]:
        out = []
        for obj, rec in self.all_primitives():
            try:
                out.append(self.primitive_info(obj, rec))
            except Exception as e:  # noqa: BLE001
                self.agent.tracker.note_error(e)
        out.sort(key=lambda p: (-len(p.waiters), -len(p.holders), p.kind, p.site or ""))
        return out

    # -- the graph -------------------------------------------------------------------

    def graph(self) -> tuple[dict[int, list[tuple]], dict[int, Any], dict[int, tuple]]:
        """edges: node id -> [(kind, target id, role, since)], nodes: id -> object.

        Task nodes and primitive nodes share one id space (object ids)."""
        edges: dict[int, list[tuple]] = {}
        nodes: dict[int, Any] = {}
        prim_recs: dict[int, tuple] = {}
        explained: set[int] = set()
        for obj, rec in self.all_primitives():
            try:
                waiters = P.waiters_of(obj)
                holders, _known = P.holders_of(obj)
            except Exception as e:  # noqa: BLE001
                self.agent.tracker.note_error(e)
                continue
            nodes[id(obj)] = obj
            if rec is not None:
                prim_recs[id(obj)] = rec
            blocking = any(role == "acquire" for role, *_ in waiters)
            for role, task, _fut, since in waiters:
                nodes[id(task)] = task
                explained.add(id(task))
                edges.setdefault(id(task), []).append(("prim", id(obj), role, since))
            if blocking:
                for t, since, _tid in holders:
                    if t is not None:
                        nodes[id(t)] = t
                        edges.setdefault(id(obj), []).append(("holder", id(t), "holder", since))
        groups_by_fut: dict[int, Any] = {}
        gt = self.agent.group_tracker
        if gt is not None:
            for g, _rec in gt.live_groups():
                fut = getattr(g, "_on_completed_fut", None)
                if fut is not None:
                    groups_by_fut[id(fut)] = g
        for task in self.tasks:
            if id(task) in explained or task.done():
                continue
            fw = getattr(task, "_fut_waiter", None)
            if fw is None:
                continue
            nodes[id(task)] = task
            targets: list[Any] = []
            if isinstance(fw, asyncio.Task):
                targets = [fw]
            elif type(fw).__name__ == "_GatheringFuture":
                targets = [c for c in (getattr(fw, "_children", None) or []) if isinstance(c, asyncio.Task) and not c.done()]
            elif id(fw) in groups_by_fut:
                targets = [c for c in group_children(groups_by_fut[id(fw)]) if not c.done()]
            for t in targets:
                nodes[id(t)] = t
                edges.setdefault(id(task), []).append(("task", id(t), "await", None))
        return edges, nodes, prim_recs

    def cycles(self) -> tuple[list[list[tuple[int, tuple | None]]], dict[int, Any], dict[int, tuple], int]:
        edges, nodes, recs = self.graph()
        color: dict[int, int] = {}
        found: list[list[tuple[int, tuple | None]]] = []
        seen: set[frozenset[int]] = set()
        for start in list(edges):
            if color.get(start):
                continue
            # iterative DFS; path holds (node, edge taken to get to the next)
            stack: list[tuple[int, int]] = [(start, 0)]
            path: list[int] = []
            via: list[tuple | None] = []
            color[start] = 1
            path.append(start)
            while stack:
                node, i = stack[-1]
                out = edges.get(node, [])
                if i >= len(out):
                    stack.pop()
                    color[node] = 2
                    path.pop()
                    if via:
                        via.pop()
                    continue
                stack[-1] = (node, i + 1)
                e = out[i]
                nxt = e[1]
                c = color.get(nxt, 0)
                if c == 1:
                    k = path.index(nxt)
                    cyc_nodes = path[k:]
                    key = frozenset(cyc_nodes)
                    if key not in seen:
                        seen.add(key)
                        steps = list(zip(cyc_nodes, via[k:] + [e]))
                        found.append(steps)
                elif c == 0:
                    color[nxt] = 1
                    path.append(nxt)
                    via.append(e)
                    stack.append((nxt, 0))
        n_edges = sum(len(v) for v in edges.values())
        return found, nodes, recs, n_edges

    def object_label(self, obj: Any, rec: tuple | None) -> str:
        kind = rec[0] if rec else (P.kind_of(obj) or type(obj).__name__)
        if rec is not None and rec[1] is not None:
            s = self.agent.introspector.interner.site((rec[1], rec[2]))
            return f"{kind} (created at {s.filename}:{s.lineno})"
        return f"{kind} ({P.unregistered_origin(kind)})" if rec is None else kind

    def deadlocks(self, heuristics: bool = True) -> DeadlockReport:
        raw, nodes, recs, n_edges = self.cycles()
        report = DeadlockReport(cycles=[], suspects=[], tasks=len(self.tasks), edges=n_edges)
        for steps in raw:
            report.cycles.append(self._cycle(steps, nodes, recs))
        if heuristics:
            self._suspects(report)
        return report

    def _cycle(self, steps: list[tuple[int, tuple | None]], nodes: dict[int, Any], recs: dict[int, tuple]) -> Deadlock:
        # steps: (node, edge leaving it); rotate so it starts at a task
        i0 = next((i for i, (n, _e) in enumerate(steps) if isinstance(nodes[n], asyncio.Task)), 0)
        steps = steps[i0:] + steps[:i0]
        edges: list[WaitEdge] = []
        longest: float | None = None
        j = 0
        while j < len(steps):
            node, e = steps[j]
            task = nodes[node]
            if e is None:
                j += 1
                continue
            kind, target, role, since = e
            tref = self.ref(task, role, since, where=True)
            if kind == "prim":
                obj = nodes[target]
                held_by = None
                if j + 1 < len(steps) and steps[j + 1][1] is not None:
                    _n, he = steps[j + 1]
                    held_by = self.ref(nodes[he[1]], "holder", he[3])
                    j += 1
                edges.append(WaitEdge(tref, P.kind_of(obj) or type(obj).__name__, _oid(obj), self.object_label(obj, recs.get(target)), held_by))
            else:
                tgt = nodes[target]
                edges.append(WaitEdge(tref, "task", _oid(tgt), f"task {tgt.get_name()!r}"))
            if since is not None:
                longest = self.now - since if longest is None else min(longest, self.now - since)
            j += 1
        names = [e.task.task_name or e.task.task_id for e in edges]
        if len(edges) == 1 and edges[0].held_by is not None and edges[0].held_by.task_id == edges[0].task.task_id:
            summary = f"task {names[0]!r} waits on a {edges[0].object_kind} it holds itself"
        else:
            summary = " -> ".join(repr(n) for n in names + names[:1])
        return Deadlock(edges=edges, summary=summary, for_s=longest)

    # -- heuristics ----------------------------------------------------------------------

    def _suspects(self, report: DeadlockReport) -> None:
        prims = self.all_primitives()
        for obj, rec in prims:
            try:
                holders, _known = P.holders_of(obj)
            except Exception:  # noqa: BLE001
                continue
            gone = [(t, s, tid) for t, s, tid in holders if t is None or t.done()]
            if gone:
                label = self.object_label(obj, rec)
                refs = [self.ref(t, "holder", s, tid=tid) for t, s, tid in gone]
                who = ", ".join(f"{r.task_name or r.task_id!r} ({r.state})" for r in refs)
                report.suspects.append(Suspect("held-by-finished", f"heuristic: {label} is held by a task that has finished without releasing it: {who}", _oid(obj), refs))
        # tasks waiting on an Event / Queue / Condition that no other live task references
        candidates: dict[int, tuple[Any, tuple | None, list]] = {}
        for obj, rec in prims:
            try:
                ws = [(role, t, since) for role, t, _f, since in P.waiters_of(obj) if role in ("wait", "get", "put", "receive", "send")]
            except Exception:  # noqa: BLE001
                continue
            if ws and not isinstance(obj, asyncio.Barrier):
                candidates[id(obj)] = (obj, rec, ws)
        if not candidates:
            return
        if len(self.tasks) > HEURISTIC_TASK_LIMIT:
            report.notes.append(f"unreferenced-wait heuristic skipped: more than {HEURISTIC_TASK_LIMIT} live tasks")
            return
        referenced = self._referenced(candidates)
        if referenced is None:
            report.notes.append("unreferenced-wait heuristic skipped: reference budget exceeded")
            return
        for oid, (obj, rec, ws) in candidates.items():
            if oid in referenced:
                continue
            refs = [self.ref(t, role, since, where=True) for role, t, since in ws]
            label = self.object_label(obj, rec)
            report.suspects.append(
                Suspect(
                    "unreferenced-wait",
                    f"heuristic: {len(refs)} task(s) wait on {label} that no other live task references (only coroutine frames were searched, not callbacks or threads)",
                    oid,
                    refs,
                )
            )

    def _referenced(self, candidates: dict[int, Any]) -> set[int] | None:
        """Ids of candidates reachable (4 references deep) from a live task
        that does not wait on them.  gc.get_referents reads what a coroutine
        holds without materializing frame locals."""
        waiting: dict[int, set[int]] = {}
        for oid, (_obj, _rec, ws) in candidates.items():
            for _role, t, _s in ws:
                waiting.setdefault(id(t), set()).add(oid)
        found: set[int] = set()
        budget = [REFERENT_BUDGET]
        shared: set[int] = set()
        # tasks waiting on none of the candidates share one visited set (a
        # module's globals are walked once); waiters get their own, since
        # what they reach does not count for what they wait on.
        free = [t for t in self.tasks if not t.done() and id(t) not in waiting]
        waiters = [t for t in self.tasks if not t.done() and id(t) in waiting]
        for task in free:
            if not self._reach(task, candidates, set(), shared, found, budget):
                return None
            if len(found) == len(candidates):
                return found
        for task in waiters:
            if not self._reach(task, candidates, waiting[id(task)], set(), found, budget):
                return None
        return found

    @staticmethod
    def _reach(task: Any, candidates: dict[int, Any], skip: set[int], seen: set[int], found: set[int], budget: list[int]) -> bool:
        frontier = [c for c, _f in _walk(task.get_coro())]
        for _depth in range(4):
            nxt: list[Any] = []
            for o in frontier:
                for r in gc.get_referents(o):
                    rid = id(r)
                    if rid in candidates and rid not in skip:
                        found.add(rid)
                    if rid in seen or isinstance(r, (str, bytes, int, float, type(None), asyncio.Task, type)):
                        continue
                    seen.add(rid)
                    budget[0] -= 1
                    if budget[0] <= 0:
                        return False
                    nxt.append(r)
            frontier = nxt
        return True

    # -- groups and async generators -----------------------------------------------------

    def groups(self) -> list[GroupInfo]:
        gt = self.agent.group_tracker
        if gt is None:
            return []
        out = []
        for g, rec in gt.live_groups():
            try:
                out.append(self.group_info(g, rec))
            except Exception as e:  # noqa: BLE001
                self.agent.tracker.note_error(e)
        out.sort(key=lambda g: g.created or 0)
        return out

    def group_info(self, g: Any, rec: tuple) -> GroupInfo:
        info = GroupInfo(id=_oid(g), kind=rec[0], state=group_state(g))
        if rec[1] is not None:
            info.site = self.agent.introspector.interner.site((rec[1], rec[2])).label()
        info.created = self.wall(rec[3])
        info.age = self.now - rec[3]
        parent = group_parent(g, rec)
        if parent is not None:
            info.parent_id, info.parent_name = _oid(parent), parent.get_name()
        origin_of = self.agent.tracker.origin_of
        # A child is in the ring once its done callback ran, and may still
        # be in the group's set then; a pending child with the same id is
        # another task at the freed one's address.
        done_ids: set[int] = set()
        for t in group_children(g):
            o = origin_of(t)
            since = o[O_CREATED] if o is not None else None
            info.children.append(self.ref(t, "child", since))
            if t.done():
                done_ids.add(id(t))
        ring, ended_count = group_finished(g)
        for tid, name, state, ended in ring:
            if tid in done_ids:
                continue
            info.children.append(TaskRef(hex(tid), name, state, "child", self.wall(ended), self.now - ended))
        info.finished_dropped = max(0, ended_count - len(ring))
        return info

    def asyncgens(self) -> list[AsyncGenInfo]:
        gt = self.agent.group_tracker
        out = []
        for loop, st in self.agent.loops.states():
            agens = loop_asyncgens(loop)
            if agens is None:  # uvloop: its set is not readable; the agent's hook recorded them
                agens = gt.agens_of(loop) if gt is not None else []
            for agen in agens:
                try:
                    out.append(self.agen_info(agen, gt.agen_record(agen) if gt else None, st.id))
                except Exception as e:  # noqa: BLE001
                    self.agent.tracker.note_error(e)
        out.sort(key=lambda a: a.created or 0)
        return out

    def agen_info(self, agen: Any, rec: tuple | None, loop_id: str) -> AsyncGenInfo:
        frame = agen.ag_frame
        if frame is None:
            state = "closed"
        elif agen.ag_running:
            state = "running"
        else:
            state = "suspended"
        info = AsyncGenInfo(id=_oid(agen), name=getattr(agen, "__qualname__", type(agen).__name__), state=state, loop_id=loop_id)
        if frame is not None:
            code = frame.f_code
            info.frame = Frame(code.co_qualname, code.co_filename, frame.f_lineno)
        if rec is not None:
            if rec[0] is not None:
                info.site = self.agent.introspector.interner.site((rec[0], rec[1])).label()
            info.created = self.wall(rec[2])
            info.age = self.now - rec[2]
            owner = rec[3]() if rec[3] is not None else None
            if owner is not None:
                info.owner_id, info.owner_name = _oid(owner), owner.get_name()
            elif rec[4] is not None:
                info.owner_id, info.owner_name = hex(rec[4]), self._history_name(rec[4])
        return info


def find_cycles(agent: Agent) -> list[Deadlock]:
    """Proven deadlocks right now (no heuristics): for a health check."""
    return View(agent).deadlocks(heuristics=False).cycles


# -- JSON-RPC methods (registered into Methods.table by methods.py) --------------------


def rpc_methods(agent: Agent) -> dict[str, Any]:
    def primitives_list(params: dict[str, Any]) -> Any:
        kind = params.get("kind")
        prims = View(agent).primitives()
        if isinstance(kind, str) and kind:
            prims = [p for p in prims if p.kind.lower() == kind.lower() or p.kind.lower().endswith("." + kind.lower())]
        return {"primitives": prims, "enabled": agent.primitive_tracker is not None}

    def deadlocks(params: dict[str, Any]) -> Any:
        return View(agent).deadlocks(heuristics=params.get("heuristics", True) is not False)

    def groups_list(params: dict[str, Any]) -> Any:
        return {"groups": View(agent).groups()}

    def asyncgens_list(params: dict[str, Any]) -> Any:
        return {"asyncgens": View(agent).asyncgens()}

    return {
        "primitives.list": primitives_list,
        "graph.deadlocks": deadlocks,
        "groups.list": groups_list,
        "asyncgens.list": asyncgens_list,
    }


def snapshot_parts(agent: Agent) -> dict[str, Any]:
    """What a dump file holds about waits, groups and generators."""
    out: dict[str, Any] = {}
    try:
        v = View(agent)
        out["primitives"] = v.primitives()
        out["deadlocks"] = v.deadlocks()
        out["groups"] = v.groups()
        out["asyncgens"] = v.asyncgens()
    except Exception as e:  # noqa: BLE001
        agent.tracker.note_error(e)
    return out
