"""Turn live tasks and raw tracker records into model records.

Runs in the agent's server thread, never on the loop: reading a suspended
coroutine's frames, a future's callbacks or a task's name is safe under the
GIL, and doing it here means a query costs the loop only GIL hand-offs (at
most one switch interval each), not a pause proportional to the task count.

Awaiters are found by *inverting* done-callbacks: a task awaited directly has
the awaiter's ``task_wakeup`` among its callbacks; gather, shield, wait and
wait_for leave closures over an outer future whose callbacks lead on; a
TaskGroup child carries ``TaskGroup._on_task_done``, whose group names the
parent task.  So the awaiters of one task are found without scanning all
tasks.  On 3.14+ CPython's own ``_asyncio_awaited_by`` is merged in.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import linecache
import os
import reprlib
import sys
import time
from collections.abc import Iterator
from types import CodeType
from typing import Any

from ..model import (
    Awaiter,
    CancelRecord,
    CreationLink,
    Frame,
    Outcome,
    Site,
    TaskInfo,
    WaitTarget,
)
from .tracker import (
    C_AT,
    C_BY_FRAMES,
    C_BY_ID,
    C_BY_NAME,
    C_COUNT,
    C_MSG,
    C_VICTIM,
    O_CREATED,
    O_PARENT,
    O_PARENT_ID,
    O_PARENT_NAME,
    O_TRUNC,
    origin_frames,
    Tracker,
    code_lineno,
    coro_of,
    safe_coro_name,
    task_stats,
)

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 2


def task_id(task: Any) -> str:
    return hex(id(task))


def coro_name(coro: Any) -> str:
    name = getattr(coro, "__qualname__", None)
    if isinstance(name, str):
        return name
    return type(coro).__name__


class Interner:
    """Caches (code, lasti) → Frame and creation sites → Site with ids.

    Bounded: code objects are finite in a program, but a pathological one
    generating code could grow it, so both caches are cleared past a limit
    (ids stay unique because the counter never resets).
    """

    LIMIT = 50_000

    def __init__(self) -> None:
        self._frames: dict[tuple[CodeType, int], Frame] = {}
        # keyed by (id(code), lasti): hashing a code object hashes its
        # bytecode and constants, far too slow for 100,000 lookups; the
        # stored code object guards against a recycled id.
        self._sites: dict[tuple[int, int], tuple[CodeType, Site]] = {}
        self._next_site = 1

    def frame(self, code: CodeType, lasti: int) -> Frame:
        key = (code, lasti)
        fr = self._frames.get(key)
        if fr is None:
            if len(self._frames) > self.LIMIT:
                self._frames.clear()
            fr = Frame(code.co_qualname, code.co_filename, code_lineno(code, lasti))
            self._frames[key] = fr
        return fr

    def frames(self, raw: tuple, source: bool = False) -> list[Frame]:
        out = []
        for i in range(0, len(raw) - 1, 2):
            fr = self.frame(raw[i], raw[i + 1])
            if source:
                fr = Frame(fr.function, fr.filename, fr.lineno, _source(fr))
            out.append(fr)
        return out

    def site(self, raw: tuple) -> Site | None:
        if not raw:
            return None
        code = raw[0]
        key = (id(code), raw[1])
        hit = self._sites.get(key)
        if hit is not None and hit[0] is code:
            return hit[1]
        if len(self._sites) > self.LIMIT:
            self._sites.clear()
        fr = self.frame(code, raw[1])
        site = Site(self._next_site, fr.function, fr.filename, fr.lineno)
        self._next_site += 1
        self._sites[key] = (code, site)
        return site


def _source(fr: Frame) -> str | None:
    line = linecache.getline(fr.filename, fr.lineno)
    return line.strip() or None


def frames_with_source(frames: list[Frame]) -> list[Frame]:
    return [Frame(f.function, f.filename, f.lineno, _source(f), f.locals) for f in frames]


def coro_frames(coro: Any, limit: int = 64, with_locals: bool = False) -> list[Frame]:
    """A coroutine's own stack through ``cr_await``, innermost first."""
    out: list[Frame] = []
    for _obj, frame in _walk(coro, limit):
        code = frame.f_code
        fr = Frame(code.co_qualname, code.co_filename, frame.f_lineno)
        if with_locals:
            fr.locals = _locals(frame)
        out.append(fr)
    out.reverse()
    return out


def _locals(frame: Any) -> dict[str, str]:
    try:
        items = list(frame.f_locals.items())[:50]
    except Exception:  # noqa: BLE001
        return {}
    out = {}
    for k, v in items:
        try:
            out[str(k)] = _repr.repr(v)
        except Exception:  # noqa: BLE001 - user reprs may raise
            out[str(k)] = f"<{type(v).__name__}: repr failed>"
    return out


def _walk(coro: Any, limit: int = 64) -> Iterator[tuple[Any, Any]]:
    """(awaitable, its frame) along a suspended chain, outermost first.

    Follows ``cr_await``/``gi_yieldfrom``/``ag_await``; an ``async for``
    awaits an ``asend`` object that only knows its generator through the
    garbage collector's referents.
    """
    for _ in range(limit):
        if coro is None:
            return
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            nxt = coro.cr_await
        elif getattr(coro, "gi_frame", None) is not None:
            frame, nxt = coro.gi_frame, coro.gi_yieldfrom
        elif getattr(coro, "ag_frame", None) is not None:
            frame, nxt = coro.ag_frame, coro.ag_await
        elif type(coro).__name__ in ("async_generator_asend", "async_generator_athrow"):
            gens = [r for r in gc.get_referents(coro) if hasattr(r, "ag_frame")]
            coro = gens[0] if gens else None
            continue
        else:
            return
        yield coro, frame
        coro = nxt


def _describe_future(fut: Any) -> WaitTarget:
    if isinstance(fut, asyncio.Task):
        return WaitTarget("task", f"task {fut.get_name()!r}", task_id=task_id(fut))
    name = type(fut).__name__
    if name == "_GatheringFuture":
        children = getattr(fut, "_children", []) or []
        done = sum(1 for c in children if c.done())
        return WaitTarget("gather", f"gather of {len(children)} ({done} done)")
    return WaitTarget("future", f"{name} {_repr.repr(fut)}")


_PRIMITIVE_WAITS = {
    ("Event", "wait"): ("event", lambda s: f"Event (set={s.is_set()})"),
    ("Lock", "acquire"): ("lock", lambda s: "Lock (locked)" if s.locked() else "Lock"),
    ("Semaphore", "acquire"): ("semaphore", lambda s: f"Semaphore (value={_sem_value(s)})"),
    ("BoundedSemaphore", "acquire"): ("semaphore", lambda s: f"BoundedSemaphore (value={_sem_value(s)})"),
    ("Condition", "wait"): ("condition", lambda s: "Condition"),
    ("Condition", "wait_for"): ("condition", lambda s: "Condition"),
    ("Queue", "get"): ("queue.get", lambda s: f"Queue.get (size {s.qsize()}/{s.maxsize or '∞'})"),
    ("Queue", "put"): ("queue.put", lambda s: f"Queue.put (size {s.qsize()}/{s.maxsize or '∞'})"),
    ("Barrier", "wait"): ("barrier", lambda s: f"Barrier ({s.n_waiting}/{s.parties})"),
    # anyio (asyncio backend); a memory stream is described by its shared state
    ("CapacityLimiter", "acquire"): ("limiter", lambda s: f"CapacityLimiter ({s.borrowed_tokens}/{_tokens(s.total_tokens)} borrowed)"),
    ("MemoryObjectReceiveStream", "receive"): ("stream.receive", lambda s: f"MemoryObjectStream.receive ({_stream_size(s._state)})"),
    ("MemoryObjectSendStream", "send"): ("stream.send", lambda s: f"MemoryObjectStream.send ({_stream_size(s._state)})"),
}
# which object a wait's description is about, when it is not the frame's self
_DESCRIBED_OBJECT = {
    "MemoryObjectReceiveStream": lambda s: s._state,
    "MemoryObjectSendStream": lambda s: s._state,
}
# waits found by qualified name: "receive" and "send" are too common as
# method names to read every such frame's locals
_QUALIFIED_WAITS = frozenset({"MemoryObjectReceiveStream.receive", "MemoryObjectSendStream.send"})


def _tokens(n: float) -> str:
    return "∞" if n == float("inf") else str(int(n))


def _stream_size(state: Any) -> str:
    return f"size {len(state.buffer)}/{_tokens(state.max_buffer_size)}"


def _sem_value(s: Any) -> Any:
    """asyncio's Semaphore keeps ``_value``; anyio's adapter only has ``value``."""
    v = getattr(s, "_value", None)
    return v if v is not None else s.value


_WAIT_METHODS = frozenset(m for _, m in _PRIMITIVE_WAITS) | {
    "_wait_for_data",
    "read",
    "readline",
    "readexactly",
    "readuntil",
}


wait_detail: Any = None  # callable(WaitTarget, primitive, outer frames) or None


def waiting_on(task: Any) -> WaitTarget | None:
    """What a suspended task waits on: a primitive, a timer, I/O, a task.

    The outermost asyncio primitive on the chain wins (``Barrier.wait``
    waits through ``Condition.wait``: the user awaited the barrier); then a
    sleep or a stream read at the innermost frame; then the future itself.
    """
    if task.done():
        return None
    frames = [f for _c, f in _walk(task.get_coro())]
    for i, frame in enumerate(frames):
        code = frame.f_code
        owner, _, meth = code.co_qualname.rpartition(".")
        # Reading f_locals gives a suspended frame a locals dict on 3.11/3.12
        # that lives as long as the frame: do it only for the few functions
        # whose ``self`` tells what is awaited.
        if not owner or (meth not in _WAIT_METHODS and code.co_qualname not in _QUALIFIED_WAITS):
            continue
        try:
            self_obj = frame.f_locals.get("self")
        except Exception:  # noqa: BLE001
            continue
        if self_obj is None:
            continue
        for klass in type(self_obj).__mro__:
            hit = _PRIMITIVE_WAITS.get((klass.__name__, meth))
            if hit is not None:
                try:
                    target = WaitTarget(hit[0], hit[1](self_obj))
                except Exception:  # noqa: BLE001
                    target = WaitTarget(hit[0], klass.__name__)
                if wait_detail is not None:  # set by agent/primitives.py: site, holder
                    try:
                        described = _DESCRIBED_OBJECT.get(klass.__name__)
                        wait_detail(target, described(self_obj) if described is not None else self_obj, frames[:i])
                    except Exception:  # noqa: BLE001
                        pass
                return target
        if meth in ("get", "put") and (type(self_obj).__module__ or "").startswith("janus"):
            # janus.Queue's async side: a proxy whose _parent is the queue
            # (registered as one primitive), waiting through an internal
            # Condition that is not listed on its own
            parent = getattr(self_obj, "_parent", None)
            if parent is not None:
                try:
                    size = f" (size {parent.async_q.qsize()}/{parent.maxsize or '∞'})"
                except Exception:  # noqa: BLE001
                    size = ""
                target = WaitTarget("queue." + meth, f"janus.Queue.{meth}{size}")
                if wait_detail is not None:
                    try:
                        wait_detail(target, parent)
                    except Exception:  # noqa: BLE001
                        pass
                return target
        if type(self_obj).__name__ == "StreamReader":
            return WaitTarget("io.read", _stream_description(self_obj))
    if frames:
        inner = frames[-1]
        code = inner.f_code
        if code.co_qualname == "sleep" and code.co_filename == asyncio.tasks.__file__:
            return _sleep_target(inner)
        meth = code.co_qualname.rpartition(".")[2]
        if meth.startswith("sock_"):
            return WaitTarget("io", f"{meth} on a socket")
    fut = getattr(task, "_fut_waiter", None)
    if fut is not None:
        return _describe_future(fut)
    return None


def _sleep_target(frame: Any) -> WaitTarget:
    try:
        loc = frame.f_locals
        delay = loc.get("delay")
        handle = loc.get("h")
        remaining = None
        # the sleep's own ``loop`` local: uvloop's TimerHandle has no _loop
        loop = loc.get("loop") or getattr(handle, "_loop", None)
        if handle is not None and loop is not None and hasattr(handle, "when"):
            remaining = max(0.0, handle.when() - loop.time())
        shown = f"{delay:.3g}" if isinstance(delay, float) else repr(delay)
        desc = f"sleep({shown})" if delay is not None else "sleep"
        return WaitTarget("sleep", desc, deadline_in=remaining)
    except Exception:  # noqa: BLE001
        return WaitTarget("sleep", "sleep")


def _stream_description(reader: Any) -> str:
    try:
        transport = reader._transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return f"socket read from {peer}" if peer else "stream read"
    except Exception:  # noqa: BLE001
        return "stream read"


def awaiters_of(fut: Any, limit: int = 16) -> list[tuple[Any, str]]:
    """Tasks awaiting ``fut`` and how (await, gather, taskgroup, shield…)."""
    found: list[tuple[Any, str]] = []
    seen: set[int] = set()

    def visit(f: Any, via: str | None, depth: int) -> None:
        if depth > 8 or id(f) in seen or len(found) >= limit:
            return
        seen.add(id(f))
        try:
            callbacks = list(f._callbacks or ())
        except Exception:  # noqa: BLE001
            callbacks = []
        for entry in callbacks:
            cb = entry[0] if isinstance(entry, tuple) else entry
            _follow(cb, via, depth)
        for aw in getattr(f, "_asyncio_awaited_by", None) or ():
            if isinstance(aw, asyncio.Task):
                add(aw, via or "await")
            else:
                visit(aw, via, depth + 1)

    def add(task: Any, via: str) -> None:
        if all(t is not task for t, _ in found):
            found.append((task, via))

    def _follow(cb: Any, via: str | None, depth: int) -> None:
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, asyncio.Task):
            add(owner, via or "await")
            return
        if owner is not None and type(owner).__name__ == "TaskGroup":
            parent = getattr(owner, "_parent_task", None)
            if parent is not None:
                add(parent, "taskgroup")
            return
        if isinstance(cb, functools.partial):
            for arg in cb.args:
                if asyncio.isfuture(arg):
                    visit(arg, via or _partial_via(cb), depth + 1)
            return
        func = getattr(cb, "__func__", cb)
        closure = getattr(func, "__closure__", None) or ()
        qual = getattr(func, "__qualname__", "")
        kind = qual.split(".<locals>.", 1)[0].lstrip("_") if ".<locals>." in qual else None
        for cell in closure:
            try:
                val = cell.cell_contents
            except ValueError:
                continue
            if asyncio.isfuture(val) and not isinstance(val, asyncio.Task):
                visit(val, via or kind, depth + 1)

    visit(fut, None, 0)
    return found


def _partial_via(cb: functools.partial) -> str:
    name = getattr(cb.func, "__name__", "")
    return "wait_for" if name == "_release_waiter" else name.lstrip("_") or "callback"


def task_state(task: Any, current: Any) -> str:
    """pending, running, cancelling, done, failed or cancelled."""
    if task.done():
        return "cancelled" if task.cancelled() else ("failed" if task._exception is not None else "done")
    if task is current:
        return "running"
    if task.cancelling() if hasattr(task, "cancelling") else False:
        return "cancelling"
    return "pending"


_NO_STEPS = (None, None, None, None)


def _name_now(origin: tuple, alive: dict[int, Any] | None) -> str | None:
    """The parent's current name if it is still alive, else as recorded
    (an eager parent's name cell holds its name after the late rename)."""
    if alive:
        parent = alive.get(origin[O_PARENT_ID])
        if parent is not None:
            return parent.get_name()
    name = origin[O_PARENT_NAME]
    return name[0] if isinstance(name, list) else name


class Introspector:
    """Builds TaskInfo records for one agent (shares interned frames/sites)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.interner = Interner()

    def now_wall(self) -> float:
        return time.time()

    def light(self, task: Any, loop_id: str, current: Any, now_mono: float, alive: dict[int, Any] | None = None) -> TaskInfo:
        """The cheap columns: enough to sort, filter and group 100k tasks."""
        tr = self.tracker
        origin = tr.origin_of(task)
        info = TaskInfo(
            id=task_id(task),
            name=task.get_name(),
            coro=safe_coro_name(task),
            state=task_state(task, current),
            created=None,
            age=None,
            loop_id=loop_id,
            tracked=origin is not None,
        )
        if origin is not None:
            info.created = tr.wall(origin[O_CREATED])
            info.age = max(0.0, now_mono - origin[O_CREATED])
            site = self.interner.site(origin_frames(origin))
            if site is not None:
                info.site_id = site.id
                info.site = site.label()
            if origin[O_PARENT_ID] is not None:
                info.parent_id = hex(origin[O_PARENT_ID])
                info.parent_name = _name_now(origin, alive)
            _step_fields(info, task_stats(task), info.age)
        return info

    def row(self, task: Any, loop_id: str, current: Any, with_stats: bool) -> tuple[list[Any], Site | None]:
        """A ``tasks.delta`` row: ``light``'s id, name, coro, state, created,
        site_id, parent_id, parent_name and loop id (then steps, busy,
        longest, first_step) as a list, and the task's site.

        No record is built: a row per new task is what a churning program
        costs each refresh, and filling a TaskInfo to read nine of its
        fields was most of it."""
        tr = self.tracker
        origin = tr.origin_of(task)
        row: list[Any] = [task_id(task), task.get_name(), safe_coro_name(task), task_state(task, current)]
        site = None
        if origin is None:
            row += [None, None, None, None, loop_id]
        else:
            site = self.interner.site(origin_frames(origin))
            pid = origin[O_PARENT_ID]
            row += [tr.wall(origin[O_CREATED]), site.id if site is not None else None, None if pid is None else hex(pid), None if pid is None else _name_now(origin, None), loop_id]
        if with_stats:
            stats = task_stats(task) if origin is not None else None
            row += stats if stats is not None and stats[0] else _NO_STEPS
        return row, site

    def fill(self, info: TaskInfo, task: Any, *, source: bool = False, locals_: bool = False, awaiter_stacks: bool = True, alive: dict[int, Any] | None = None) -> TaskInfo:
        """Add the stack, awaiters, wait target, chain and cancel record."""
        coro = coro_of(task)
        if coro is None:
            return info
        stack = coro_frames(coro, with_locals=locals_)
        info.stack = frames_with_source(stack) if source else stack
        info.awaiters = []
        for aw, via in awaiters_of(task):
            info.awaiters.append(
                Awaiter(
                    task_id(aw),
                    aw.get_name(),
                    via,
                    coro_frames(aw.get_coro()) if awaiter_stacks else [],
                )
            )
        try:
            info.waiting_on = waiting_on(task)
        except Exception:  # noqa: BLE001 - a best-effort description
            info.waiting_on = None
        origin = self.tracker.origin_of(task)
        info.creation_chain = self.chain(info.id, origin, source, alive) if origin is not None else []
        rec = self.tracker.cancel_of(task)
        if rec is not None:
            info.cancel = self.cancel_record(rec, source)
        return info

    def chain(self, tid: str | None, origin: tuple, source: bool = False, alive: dict[int, Any] | None = None) -> list[CreationLink]:
        links: list[CreationLink] = []
        cur: tuple | None = origin
        while cur is not None and len(links) < self.tracker.config.max_chain + 1:
            frames = self.interner.frames(origin_frames(cur), source)
            links.append(
                CreationLink(
                    task_id=tid,
                    frames=frames,
                    created=self.tracker.wall(cur[O_CREATED]),
                    parent_id=hex(cur[O_PARENT_ID]) if cur[O_PARENT_ID] is not None else None,
                    parent_name=_name_now(cur, alive),
                    truncated=cur[O_TRUNC],
                )
            )
            tid = links[-1].parent_id
            cur = cur[O_PARENT]
        return links

    def cancel_record(self, rec: list, source: bool = False) -> CancelRecord:
        return CancelRecord(
            at=self.tracker.wall(rec[C_AT]),
            by_task_id=hex(rec[C_BY_ID]) if rec[C_BY_ID] is not None else None,
            by_task_name=rec[C_BY_NAME],
            by_stack=self.interner.frames(rec[C_BY_FRAMES], source),
            message=rec[C_MSG],
            victim_stack=self.interner.frames(rec[C_VICTIM], source),
            count=rec[C_COUNT],
        )

    def history_info(self, entry: tuple, now_mono: float, detail: bool, source: bool = False) -> TaskInfo:
        addr, name, coro, origin, cancel, state, ended, extra = entry[:8]
        stats = entry[8:12] if len(entry) >= 12 and entry[8] is not None else None
        if not isinstance(coro, str):
            # the step hook keeps the (finished) coroutine, named only when asked
            coro = getattr(coro, "__qualname__", None) or type(coro).__name__
        tr = self.tracker
        info = TaskInfo(
            id=hex(addr),
            name=name,
            coro=coro,
            state=state,
            created=tr.wall(origin[O_CREATED]) if origin else None,
            age=(ended - origin[O_CREATED]) if origin else None,
            loop_id="",
            tracked=origin is not None,
        )
        if origin is not None:
            site = self.interner.site(origin_frames(origin))
            if site is not None:
                info.site_id, info.site = site.id, site.label()
            if origin[O_PARENT_ID] is not None:
                info.parent_id, info.parent_name = hex(origin[O_PARENT_ID]), _name_now(origin, None)
        _step_fields(info, stats, info.age)
        outcome = Outcome(state=state, ended=tr.wall(ended))
        if extra is not None:
            outcome.exc_type, outcome.exc_message = extra[0], extra[1]
            outcome.traceback = self.interner.frames(extra[2], source)
        info.outcome = outcome
        if cancel is not None:
            info.cancel = self.cancel_record(cancel, source)
        if detail and origin is not None:
            info.creation_chain = self.chain(info.id, origin, source)
        return info


def _step_fields(info: TaskInfo, stats: tuple | None, age: float | None) -> None:
    """Copy a task's step metrics into its record (only if it was timed:
    tasks on loops without the step hook have zero steps forever)."""
    if stats is None or not stats[0]:
        return
    info.steps, info.busy, info.longest, info.first_step = stats
    if age is not None:
        info.idle = max(0.0, age - info.busy)


def frames_of_thread(thread_id: int, limit: int = 64) -> list[Frame]:
    """The current Python stack of a thread, innermost first."""
    frame = sys._current_frames().get(thread_id)
    out = []
    while frame is not None and len(out) < limit:
        code = frame.f_code
        if code.co_filename.startswith(_AGENT_DIR):
            frame = frame.f_back  # the step hook's own frame: not the user's
            continue
        fr = Frame(code.co_qualname, code.co_filename, frame.f_lineno)
        fr.source = _source(fr)
        out.append(fr)
        frame = frame.f_back
    return out
