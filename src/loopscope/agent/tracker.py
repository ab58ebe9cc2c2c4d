"""Task tracking: creation sites and chains, cancellation sources, history.

The hot path is task creation, so this module records only cheap references
at that moment and formats nothing.  The measured alternatives, and why this
shape won, are in BENCHMARKS.md and docs/architecture.md.  In short:

* Tasks are created as ``TrackedTask``, a ``__slots__`` subclass of the C
  ``asyncio.Task``.  Slots hold the creation *origin* (a tuple of code
  objects and bytecode offsets, the parent's origin and the creation time).
  ``f_lasti`` is stored instead of ``f_lineno``: turning an offset into a
  line number decodes the code's line table, which costs more than the rest
  of the capture, so it is done only when someone asks.
* The subclass overrides ``cancel`` to record who cancelled the task, from
  where, and where the victim was suspended.  Only cancellation pays for it.
* The end of a task is recorded by the step hook (steps.py) from the step
  that finished it; on loops without that hook, in ``__del__`` (chained to
  the C finaliser, which still logs "Task was destroyed but it is
  pending!").  Both go through ``note_end``, which inlines the common clean
  finish.  A done callback would go through ``loop.call_soon`` and a
  ``Handle`` for every task, which measured at +40 % on the spawn benchmark.
  The price of ``__del__`` is that ``Outcome.ended`` is when the task was
  released, not when it finished, for tasks something still holds.
* ``asyncio.create_task`` and ``loop.create_task`` build tasks without
  calling the factory while it is ours (spawn.py, ``make_track``).
* Memory is bounded: creation chains stop at ``max_chain`` links, histories
  are rings per outcome with an age limit, nothing holds a task strongly.

Nothing here may raise into the host: the factory falls back to the inner
factory if recording fails, and ``__del__``/``cancel`` swallow their own
errors (counted in ``Tracker.errors``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from asyncio import base_events
from types import CodeType, CoroutineType, FrameType, WrapperDescriptorType
from typing import Any

from . import spawn
from .compiled import load_speedups as _load_speedups
from .compiled import speedups as _speedups
from .config import Config
from .hooks import HOOKS
from .metrics import BOUNDS, FINE_LIMIT, LoopMetrics
from .taskindex import INDEX


def _ignore(_task: Any) -> None:
    """registry_discard where the compiled parts are missing."""

_Task = asyncio.Task
_task_del = _Task.__del__
_task_cancel = _Task.cancel
_getframe = sys._getframe
_get_running_loop = asyncio._get_running_loop
_monotonic = time.monotonic

try:  # 3.12+: C current_task(loop); 3.11: the C module's dict of current tasks
    from _asyncio import current_task as _c_current_task  # type: ignore[attr-defined]

    if sys.version_info < (3, 12):
        raise ImportError
    _current_task: Callable[[Any], Any] = _c_current_task
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _asyncio import _current_tasks  # type: ignore[attr-defined]

        _current_task = _current_tasks.get
    except ImportError:
        _current_task = asyncio.current_task

# Frames in these directories are skipped when looking for a creation site:
# asyncio's own (create_task, ensure_future, gather, TaskGroup) and ours.
_SKIP_DIRS = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
)
# Where a cancel() caller's stack stops: below these is the loop's machinery
# (Handle._run, _run_once, run_forever, asyncio.run), the same for everyone.
_LOOP_MACHINERY = frozenset(
    os.path.join(os.path.dirname(asyncio.__file__), name)
    for name in ("events.py", "base_events.py", "runners.py", "unix_events.py", "selector_events.py")
).union({os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps.py")})  # our Handle._run
_skip_cache: dict[str, bool] = {}


def _is_skipped(filename: str) -> bool:
    skipped = filename.startswith(_SKIP_DIRS) or filename == "<frozen runpy>"
    if len(_skip_cache) < 10_000:
        _skip_cache[filename] = skipped
    return skipped


# An origin is a tuple, never mutated:
#   (code0, lasti0, code1, lasti1, ..., parent_origin, parent_id, parent_name,
#    created_mono, depth, truncated)
# The frames come first, innermost first, flat and inline (one tuple rather
# than two: every object the collector tracks costs a share of a
# young-generation collection).  The fixed fields are read from the end.
# parent_name is a str, or an eager parent's one-element name cell (a list).
Origin = tuple
O_PARENT, O_PARENT_ID, O_PARENT_NAME, O_CREATED, O_DEPTH, O_TRUNC = range(-6, 0)

# Most tasks never get an origin tuple: the fast creation path (make_track)
# writes four slots, ``_ls_code``, ``_ls_lasti``, ``_ls_created`` and
# ``_ls_link``, and ``origin_of`` builds the tuple when someone asks.  A
# tuple per task cost 2,200 instructions per task of spawn on 3.11 and
# 2,300 on 3.14 (its allocation, its share of the young collections, its
# release) against four slot writes.  ``_ls_link`` is the parent's link,
# shared by all its children and made once, at its first child:
#   (the parent's origin, cut to max_chain, parent_id, parent_name)
# so the chain outlives the parent without keeping it alive.  The slower
# creation paths (several creation frames, eager tasks, a program's own
# factory) record the whole tuple in ``_ls_origin`` and set ``_ls_link`` to
# ``WHOLE``.  The parent's name is taken when its link is made, at its first
# child; readers prefer the live parent's current name (introspect).
WHOLE = ("see _ls_origin",)
_UNSET = object()


def origin_frames(origin: Origin) -> tuple:
    """The flat (code, lasti, ...) frames of an origin."""
    return origin[:O_PARENT]


def origin_of(task: Any) -> Origin | None:
    """The origin of one of our tasks (None while not recorded): see above.
    Called from any thread: the fast path writes ``_ls_link`` last."""
    link = getattr(task, "_ls_link", _UNSET)
    if link is WHOLE:
        return task._ls_origin
    if link is _UNSET:
        return None
    code = task._ls_code
    return _origin_from(() if code is None else (code, task._ls_lasti), link, task._ls_created)


def _origin_from(frames: tuple, link: tuple | None, created: float) -> Origin:
    """An origin from its frames, the parent's link (None: no parent) and
    the creation time."""
    if link is None:
        return (*frames, None, None, None, created, 0, False)
    porigin, pid, pname = link
    return (*frames, porigin, pid, pname, created, 1 if porigin is None else porigin[O_DEPTH] + 1, False)


def _set_origin(task: Any, origin: Origin) -> None:
    """Record a whole origin on one of our tasks (the slower paths)."""
    task._ls_origin = origin
    task._ls_created = origin[O_CREATED]
    task._ls_link = WHOLE


def _cut_chain(porigin: Origin) -> Origin:
    """A parent origin with its own parent dropped (marked truncated), so
    that creation chains stay within ``max_chain`` links: bounded memory."""
    return porigin[:O_PARENT] + (None,) + porigin[O_PARENT_ID:O_DEPTH] + (porigin[O_DEPTH], True)

# A raw cancel record, built by ``TrackedTask.cancel``:
#   [at_mono, by_task_id, by_task_name, by_frames, message, victim_frames, count, recorded]
C_AT, C_BY_ID, C_BY_NAME, C_BY_FRAMES, C_MSG, C_VICTIM, C_COUNT, C_RECORDED = range(8)


def _caller_frames(depth: int) -> tuple:
    """The ``depth`` innermost user frames of the creating code, as raw refs.

    Frame 0 is this function, 1 ``make_origin``, 2 the factory, 3 whoever
    called the factory (``loop.create_task``); the walk then skips asyncio's
    and loopscope's frames.
    """
    f = _first_user_frame(_getframe(3))
    if f is None:
        return ()
    if depth == 1:
        return (f.f_code, f.f_lasti)
    return raw_stack_of_frame(f, depth)


def raw_stack_of_frame(f: FrameType | None, limit: int) -> tuple:
    """A frame and its callers as a flat (code, lasti, …) tuple, innermost
    first, stopping where the event loop's own machinery begins."""
    out: list = []
    while f is not None and len(out) < 2 * limit:
        if f.f_code.co_filename in _LOOP_MACHINERY:
            break
        out.append(f.f_code)
        out.append(f.f_lasti)
        f = f.f_back
    return tuple(out)


def raw_coro_stack(coro: Any, limit: int) -> tuple:
    """A suspended coroutine's chain as (code, lasti, …), innermost first."""
    out: list = []
    while coro is not None and len(out) < 2 * limit:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            nxt = coro.cr_await
        else:
            frame = getattr(coro, "gi_frame", None)
            if frame is None:
                frame = getattr(coro, "ag_frame", None)
                nxt = getattr(coro, "ag_await", None)
            else:
                nxt = coro.gi_yieldfrom
        if frame is None:
            break
        out.append(frame.f_code)
        out.append(frame.f_lasti)
        coro = nxt
    # collected outermost first; flip pairs so the innermost frame comes first
    pairs = [out[i : i + 2] for i in range(0, len(out), 2)]
    pairs.reverse()
    return tuple(x for p in pairs for x in p)


#: Clean completions kept at once at least, whatever ``history_size``: a
#: small ring still shows the latest ones of a burst.
DONE_BURST_MIN = 1000
#: Under sustained churn the done ring holds a sample of the last this many
#: seconds: the bucket earns its capacity back over this time.  Each kept
#: entry costs a Python call and a tuple (~3 µs); at 1,000 a second, a
#: server doing 3,000 requests a second paid that for a third of them.
DONE_SPAN_S = 10.0


class Tracker:
    """Process-wide state shared by every tracked loop: history and counters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        size = max(1, config.history_size)
        self.done: collections.deque = collections.deque(maxlen=size)
        self.failed: collections.deque = collections.deque(maxlen=size)
        self.cancelled: collections.deque = collections.deque(maxlen=size)
        # Clean completions enter the done ring through a token bucket (the
        # watchdog refills it, see refill_done): ``done_capacity`` at once,
        # ``done_rate`` a second after that; failures and cancellations
        # always.  Under heavy churn the ring would otherwise turn over every
        # few milliseconds, at a tuple and three calls per task: sampled, it
        # spans the last DONE_SPAN_S seconds or more.
        self.done_capacity = max(size, DONE_BURST_MIN)
        self.done_rate = self.done_capacity / DONE_SPAN_S
        self.done_budget = [self.done_capacity]
        self.done_kept = 0  # entries the bucket paid for (as of the last refill)
        self.done_always = 0  # clean ends record_end kept (eager, cancel-and-finish)
        self._budget_set = self.done_capacity
        self._refilled = _monotonic()
        self.errors = 0
        self.last_error: str | None = None
        self.enabled = True
        self.mono0 = _monotonic()
        self.wall0 = time.time()
        # Tasks made by a foreign factory we chain to cannot carry slots.
        self.foreign: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Cancelled tasks are often still referenced (``t.cancel(); await t``)
        # so __del__ comes late; these weakrefs let a query record them as
        # soon as they are done.  Bounded: cancellation is the rare path.
        self.cancelling: collections.deque = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.hooks = HOOKS
        # LoopMetrics by id(loop), for the paths that cannot read the
        # loop attribute (uvloop loops take no attributes).
        self.metrics: dict[int, Any] = {}
        #: ``_speedups.registry_add`` once the task registry is on (taskindex.py)
        self.registry_add: Callable[[Any], None] | None = None
        #: What makes exact tasks (``_speedups.EagerInit``) where they can
        #: be made, and their cancel record; ``enable_exact`` turns them on.
        self.exact_maker: Any = None
        self.exact_cancel: Callable[[Any, Any], None] | None = None
        self.task_class, self.del_task_class, self.eager_task_class = _make_task_classes(self)
        #: Whether tasks are made exact (``enable_exact``).
        self.exact_on = False
        #: The ``Task`` a library's view of asyncio gets (integrations.py):
        #: a subclass of the eager class whose instances are exact tasks
        #: while exact tasks are on (``_speedups.exact_view``).
        self.view_task_class: type = self.eager_task_class
        #: What builds an eager task: the exact maker once enabled (3.14+),
        #: else ``eager_task_class`` (factories read it when they are made).
        self.eager_new: Callable[..., Any] = self.eager_task_class

    @property
    def recorded(self) -> frozenset[type]:
        """The classes whose tasks carry a record: ``type(task) in`` it says
        a task may be ours (then ``ours`` says whether it is)."""
        ours = (self.task_class, self.eager_task_class)
        return frozenset((*ours, _Task) if self.exact_on else ours)

    def enable_exact(self) -> bool:
        """The tasks loopscope makes are exact ``asyncio.Task`` objects from
        now on (``_speedups.c``, "Exact tasks"): those its factory and
        ``spawn.py`` make, and on 3.14+ the eager ones too.  False where
        they cannot be."""
        maker = self.exact_maker
        if maker is None or self.exact_on:
            return self.exact_on
        try:
            ok = bool(_speedups.exact_enable(_Task, maker, self.exact_cancel, self.note_error))
        except Exception as e:  # noqa: BLE001
            self.note_error(e)
            ok = False
        if ok:
            self.exact_on = True
            if sys.version_info >= (3, 14):
                # before, eager tasks come from asyncio's eager factory,
                # whose tasks the loop names after their first step: a
                # child's link reads the name from our class's name cell
                self.eager_new = maker
            if self.view_task_class is self.eager_task_class:
                eager = self.eager_task_class
                view = type(eager)("Task", (eager,), {"__slots__": (), "__module__": eager.__module__})
                if _speedups.exact_view(view):
                    self.view_task_class = view
        return ok

    def disable_exact(self) -> None:
        """asyncio's Task as it was; the exact tasks alive are forgotten."""
        if not self.exact_on:
            return
        self.exact_on = False
        self.eager_new = self.eager_task_class
        _speedups.exact_disable()

    def ours(self, task: Any) -> bool:
        """Whether loopscope keeps a record of ``task``: one of its classes,
        or an exact task with a record."""
        return isinstance(task, self.task_class) or (self.exact_on and _speedups.exact_has(task))

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def origin_of(self, task: Any) -> Origin | None:
        origin = origin_of(task)
        if origin is None and not self.ours(task):
            try:
                origin = self.foreign.get(task)
            except TypeError:
                origin = None
        return origin

    def cancel_of(self, task: Any) -> list | None:
        return getattr(task, "_ls_cancel", None)

    def created_of(self, task: Any) -> float | None:
        """A task's creation time (monotonic), without building its origin."""
        created = getattr(task, "_ls_created", None)
        if created is None:
            origin = self.origin_of(task)
            created = origin[O_CREATED] if origin is not None else None
        return created

    def make_origin(self, loop: Any) -> Origin:
        """Called from the factory (frame depth matters: see _caller_frames)."""
        frames = _caller_frames(self.config.creation_frames)
        return _origin_from(frames, self.parent_link(loop), _monotonic())

    def parent_link(self, loop: Any) -> tuple | None:
        """The link a task created now on ``loop`` records of its parent,
        the running task (None: no parent)."""
        parent = _current_task(loop)
        if parent is None:
            return None
        try:
            return parent._ls_plink  # type: ignore[no-any-return]
        except AttributeError:  # its first child, or not one of ours
            return self.link_of(parent)

    def link_of(self, parent: Any) -> tuple:
        """What a child of ``parent`` records of it (see ``origin_of``): made
        at its first child and kept in its ``_ls_plink`` slot if it is one of
        ours; made for every child of a task of another class (rare: tasks
        from before the agent, or from a program's own factory), whose own
        creation chain is not followed."""
        ours = self.ours(parent)
        porigin = origin_of(parent) if ours else None
        if porigin is not None and porigin[O_DEPTH] + 1 >= self.config.max_chain:
            porigin = _cut_chain(porigin)
        pname: Any = parent._ls_name_cell if ours else None
        if pname is None:
            pname = parent.get_name()
        elif pname[0] is None:
            pname[0] = parent.get_name()
        link = (porigin, id(parent), pname)
        if ours:
            parent._ls_plink = link
        return link

    def refill_done(self, now: float | None = None) -> None:
        """Give the done ring back the entries the time since the last
        refill earned (``done_rate`` a second, at most ``done_capacity`` in
        hand), from the watchdog thread
        or a query.  Races with the loop thread's decrement cost at most one
        entry more or less: the counts of tasks stay exact regardless."""
        if now is None:
            now = _monotonic()
        with self._lock:  # the watchdog and the server thread both refill
            cell = self.done_budget
            left = cell[0]
            self.done_kept += max(0, self._budget_set - left)
            earned = int((now - self._refilled) * self.done_rate)
            if earned > 0:
                cell[0] = left = min(self.done_capacity, left + earned)
                self._refilled += earned / self.done_rate  # the fraction left over counts next time
            self._budget_set = left

    def forget_history(self) -> None:
        """Empty the rings and their counts (a forked child's history is
        not its parent's)."""
        for ring in (self.done, self.failed, self.cancelled, self.cancelling):
            ring.clear()
        with self._lock:
            self.done_kept = self.done_always = 0
            self._budget_set = self.done_budget[0]

    def done_not_kept(self, done_total: int) -> int:
        """How many clean completions were counted but not put in the ring."""
        self.refill_done()
        return max(0, done_total - self.done_kept - self.done_always)

    def harvest(self) -> None:
        """Record cancelled tasks that are done but not yet released."""
        for ref in list(self.cancelling):
            task = ref()
            if task is not None and task.done():
                rec = getattr(task, "_ls_cancel", None)
                if rec is not None and not rec[C_RECORDED]:
                    self.record_end(task)
            if task is None or task.done():
                try:
                    self.cancelling.remove(ref)
                except ValueError:
                    pass

    def record_end(self, task: Any, now: float | None = None, m: Any = None) -> None:
        """History entries are flat tuples: (id, name, coro or its name,
        origin, cancel record, outcome, ended, exception summary, steps, busy,
        longest, first step); one allocation per finished task.

        Move a finished (or collected-while-pending) task into history and
        count it.

        Runs once per task (from the step hook that finished it, or from
        ``__del__`` on loops without the hook), so it is a hot path too: one
        ``_state`` read decides, and slots are read in try blocks (free when
        set) rather than with getattr defaults (costly when unset).
        """
        if not self.enabled:
            return
        try:
            cancel = task._ls_cancel
        except AttributeError:
            cancel = None
        if cancel is not None:
            if cancel[C_RECORDED]:
                return
            if task.done():
                cancel[C_RECORDED] = True
        origin = origin_of(task)
        if now is None:
            now = _monotonic()
        if m is None:
            m = self.metrics.get(id(task.get_loop()))
        state = task._state
        extra = None
        if state == "FINISHED":
            # ``_exception`` rather than ``exception()``: the method marks
            # the exception as retrieved and would silence asyncio's
            # "Task exception was never retrieved" log in the host.
            exc = task._exception
            if exc is None:
                ring, outcome = self.done, "done"
                self.done_always += 1
                if m is not None:
                    m.done += 1
            else:
                ring, outcome = self.failed, "failed"
                extra = _exception_summary(exc, self.config.max_frames)
                if m is not None:
                    m.failed += 1
        elif state == "CANCELLED":
            ring, outcome = self.cancelled, "cancelled"
            if m is not None:
                m.cancelled += 1
        else:
            ring, outcome = self.failed, "destroyed-pending"
            if m is not None:
                m.destroyed += 1
        # An eager task's coroutine name is in a slot: a task that finished
        # in its constructor has no coroutine left on 3.13+ (get_coro() is
        # None) and crashes get_coro() on 3.12.0/3.12.1.
        coro_name = getattr(task, "_ls_coro_name", None)
        if coro_name is None:
            if _GET_CORO_UNSAFE_WHEN_DONE:
                coro_name = safe_coro_name(task)
            else:
                coro = task.get_coro()
                coro_name = getattr(coro, "__qualname__", None) or type(coro).__name__
        # Rings are bounded by length; the age limit applies when read.
        ring.append((id(task), task.get_name(), coro_name, origin, cancel, outcome, now, extra) + (task_stats(task) or _NO_STATS))
        if self.hooks.unregister:
            self.hooks.call_unregister(task)

    def eager_step(self, m: Any, task: Any, t0: float, t1: float, n0: float) -> bool:
        """Account for the first step an eager task ran in its constructor.

        The enclosing step (the creator's) includes this time; ``m.nested``
        lets the step hook subtract it, so each step is counted once.  Eager
        children of this step added their own spans since ``n0``: they are
        not this task's time, and the enclosing step subtracts our whole span.
        Returns whether the step finished the task (the caller records the
        end after ``task_register``).
        """
        d = t1 - t0 - (m.nested - n0)
        m.nested = n0 + (t1 - t0)
        m.add_step(task, t0, d)
        task._ls_steps = 1
        task._ls_busy = d
        task._ls_longest = d
        task._ls_first = 0.0
        task._ls_last = t1
        return task._state != "PENDING"

    def history(self) -> list[tuple]:
        """All history entries, oldest first (copies are atomic under the GIL)."""
        now = _monotonic()
        ttl = self.config.history_age
        self.harvest()
        items = list(self.done) + list(self.failed) + list(self.cancelled)
        if ttl > 0:
            items = [it for it in items if now - it[6] <= ttl]
        items.sort(key=lambda it: it[6])
        return items


# CPython 3.12.0 and 3.12.1 crash in Task.get_coro() on an eager task that
# finished inside its constructor (fixed in 3.12.2).
_GET_CORO_UNSAFE_WHEN_DONE = sys.version_info[:3] in ((3, 12, 0), (3, 12, 1))


def _lazy_safe(task: Any) -> bool:
    """Whether get_coro() is safe on a finished task of 3.12.0/1: it is for
    tasks known not to be eager (ours); unknown tasks are not risked."""
    return not getattr(task, "_ls_eager", True)


def coro_of(task: Any) -> Any:
    """task.get_coro(), or None where that would crash (see above)."""
    if _GET_CORO_UNSAFE_WHEN_DONE and task.done() and not _lazy_safe(task):
        return None
    return task.get_coro()


def safe_coro_name(task: Any) -> str:
    """The qualified name of a task's coroutine, without crashing old 3.12s."""
    if _GET_CORO_UNSAFE_WHEN_DONE and task.done() and not _lazy_safe(task):
        return getattr(task, "_ls_coro_name", None) or "?"
    coro = task.get_coro()
    if coro is None:  # 3.13+: an eager task that finished in its constructor
        return getattr(task, "_ls_coro_name", None) or "?"
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


_NO_STATS = (None, None, None, None)


def task_stats(task: Any) -> tuple | None:
    """(steps, busy, longest, first) of a task, if it was measured."""
    try:
        steps = task._ls_steps
    except AttributeError:
        return None
    if not steps:  # the other slots are written at the first step
        return (0, 0.0, 0.0, None)
    return (steps, task._ls_busy, task._ls_longest, task._ls_first)


def _exception_summary(exc: BaseException, limit: int) -> tuple:
    """Type, truncated message and raw traceback of a task's exception."""
    try:
        message = str(exc)[:500]
    except BaseException:  # noqa: BLE001 - a broken __str__ must not hurt
        message = "<unprintable>"
    frames: list = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        frames.append(tb.tb_lasti)
        tb = tb.tb_next
    # innermost first, bounded
    pairs = [frames[i : i + 2] for i in range(0, len(frames), 2)][-limit:]
    pairs.reverse()
    return (type(exc).__qualname__, message, tuple(x for p in pairs for x in p))


def _make_task_classes(tracker: Tracker) -> tuple[type, type, type]:
    """Build the Task subclasses bound to one tracker.

    A closure rather than module-level classes so that uninstall/reinstall and
    tests with separate trackers never share state through class attributes.

    * ``TrackedTask`` has no ``__del__``: on loops whose steps go through
      ``asyncio.events.Handle._run`` the step hook (steps.py) sees the step
      that finishes a task and records its end there, exactly when it ends.
    * ``DelTrackedTask`` adds a ``__del__`` that records the end when the
      task is released, for loops without that hook (uvloop, or metrics off).
    * ``EagerTrackedTask`` is for eager tasks; its first step runs inside the
      constructor, outside any Handle, so the constructor times it.
    """
    record_end = tracker.record_end
    cfg = tracker.config
    one_frame = cfg.creation_frames == 1
    parent_link = tracker.parent_link
    done_append = tracker.done.append
    budget = tracker.done_budget
    metrics_get = tracker.metrics.get
    hooks = tracker.hooks
    registry_add: Callable[[Any], None] | None = None  # set below, once enabled
    registry_discard = getattr(_speedups, "registry_discard", _ignore)

    def clean_end(task: Any, now: float | None) -> None:
        """The rest of a clean finish, already counted: its history entry if
        the done ring's budget allows (Tracker.refill_done), task_unregister.
        Callers test ``budget[0] > 0 or hooks.unregister`` first, inline, so
        that a sampled-out end costs no call at all."""
        if budget[0] > 0:
            budget[0] -= 1
            if now is None:
                now = _monotonic()
            # the coroutine's name, not the coroutine: a ring of finished
            # coroutines would keep their memory from being reused (an
            # eager task's is in a slot: see EagerTrackedTask)
            if task._ls_eager:
                coro_name = task._ls_coro_name or "?"
            else:
                coro_name = getattr(task.get_coro(), "__qualname__", "?")
            done_append((id(task), task.get_name(), coro_name, origin_of(task), None, "done", now, None) + (task_stats(task) or _NO_STATS))
        if hooks.unregister:
            hooks.call_unregister(task)

    def note_end(m: Any, task: Any, now: float | None) -> None:
        """Record the end of one of our tasks: from the step that finished
        it (steps.py) or from ``__del__``.  A clean finish is counted here
        and kept by ``clean_end``; everything else goes through
        ``Tracker.record_end``.  The step hook and ``__del__`` inline the
        clean case's test (a call per task is measurable)."""
        if task._ls_eager or type(task) is _Task:
            task._ls_ended = True  # its __del__ (an exact task's finaliser) must not record it again
        if task._ls_cancel is None and task._state == "FINISHED" and task._exception is None:
            if m is not None:
                m.done += 1
            if budget[0] > 0 or hooks.unregister:
                clean_end(task, now)
            return
        record_end(task, now, m)

    tracker.note_end = note_end
    tracker.clean_end = clean_end

    # the compiled parts, only where asyncio.Task is the C one
    compiled = _speedups is not None and cfg.speedups and isinstance(_Task.__dict__.get("__del__"), WrapperDescriptorType)
    # With them, the per-step numbers are C fields of a class between
    # asyncio.Task and ours (_speedups.c, TaskTimes), read and written from
    # Python under the same names, with the same behaviour, as these slots.
    base = _speedups.task_base(_Task) if compiled else None
    if base is None:
        compiled = False
        base = _Task
    times = () if compiled else ("_ls_created", "_ls_steps", "_ls_busy", "_ls_longest", "_ls_first", "_ls_last")

    class TrackedTask(base):  # type: ignore[misc,valid-type]
        """asyncio.Task with a few slots; behaves exactly like asyncio.Task."""

        __slots__ = ("_ls_code", "_ls_lasti", "_ls_link", "_ls_origin", "_ls_plink", "_ls_cancel", *times)
        _ls_name_cell = None  # eager tasks have a slot of that name
        _ls_eager = False

        def cancel(self, msg: Any = None) -> bool:
            try:
                if not self.done():
                    _record_cancel(self, msg)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            return _task_cancel(self, msg)

    class DelTrackedTask(TrackedTask):
        """For loops without the step hook: the end is recorded on release
        (by ``_speedups.TaskDel``, the same ``__del__`` compiled, where it
        was built)."""

        __slots__ = ()
        #: The loop's LoopMetrics, set on the per-loop subclass (del_class_for):
        #: finding it from the task costs ~1,000 instructions per task.
        _ls_m: Any = None

        def __del__(self) -> None:
            try:
                m = self._ls_m
                if m is None:
                    m = metrics_get(id(self._loop))
                if self._ls_cancel is None and self._state == "FINISHED" and self._exception is None:
                    # note_end's clean finish, inlined (never eager here)
                    if m is not None:
                        m.done += 1
                    if budget[0] > 0 or hooks.unregister:
                        clean_end(self, None)
                else:
                    note_end(m, self, _monotonic())
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            _task_del(self)

    def compiled_del(ended_cls: type | None) -> Any:
        """The same __del__ in C (agent/_speedups.c), which calls the C
        task's finaliser directly; ``ended_cls``: the eager class, whose
        tasks say in ``_ls_ended`` that their end is already recorded."""
        return _speedups.TaskDel(
            cls=TrackedTask,
            base=_Task,
            metrics=tracker.metrics,
            metrics_cls=LoopMetrics,
            note_end=note_end,
            clean_end=clean_end,
            budget=budget,
            hooks=hooks,
            note_error=tracker.note_error,
            ended_cls=ended_cls,
        )

    if compiled:
        DelTrackedTask.__del__ = compiled_del(None)  # type: ignore[method-assign]

    if sys.version_info[:2] == (3, 13):
        _set_name = _Task.set_name

        def set_name(self: Any, value: Any) -> None:
            """3.13's create_task calls ``set_name(name)`` even when no name
            was given once a task factory is set, naming the task "None";
            without loopscope the task would keep its "Task-N" name."""
            if value is not None:
                _set_name(self, value)

        TrackedTask.set_name = set_name  # type: ignore[method-assign]

    class EagerTrackedTask(TrackedTask):
        """Eager tasks run their first step inside __init__, so the origin
        must be set before that step creates children of its own, and the
        step is timed here (no Handle runs it).

        More slots: the coroutine's name (3.12.0/3.12.1 crash in get_coro()
        once an eager task finished in its constructor), a one-element name
        cell that children reference, because 3.12/3.13 name a factory-made
        task only after that first step (None from 3.14), and whether the
        end is recorded (the step hook records it on hooked loops,
        ``__del__`` elsewhere).

        Where the compiled parts are built, ``_speedups.EagerInit`` does
        what this ``__init__`` does, as the class's ``tp_init``, and
        ``TaskDel`` what its ``__del__`` does; the two must stay line for
        line the same, and the test suite runs both.
        """

        __slots__ = ("_ls_coro_name", "_ls_name_cell", "_ls_ended")
        _ls_eager = True
        _ls_m: Any = None  # the compiled __del__ (TaskDel) reads it; found by loop here

        def __init__(self, coro: Any, *, loop: Any = None, **kwargs: Any) -> None:
            m = None
            try:
                if registry_add is not None:
                    registry_add(self)
                if loop is None:
                    loop = _get_running_loop()
                self._ls_cancel = None
                self._ls_ended = False
                self._ls_steps = 0
                self._ls_busy = 0.0
                self._ls_longest = 0.0
                self._ls_first = None
                self._ls_coro_name = getattr(coro, "__qualname__", None)
                self._ls_name_cell = [None] if _EAGER_NAME_CELL else None
                if one_frame:
                    # make_origin's record in the four slots of the fast
                    # path (make_track), not a whole origin tuple: servers
                    # make an eager task per request (aiohttp on 3.12+)
                    f = _first_user_frame(_getframe(1))
                    link = parent_link(loop)
                    if f is None:
                        self._ls_code = self._ls_lasti = None
                    else:
                        self._ls_code = f.f_code
                        self._ls_lasti = f.f_lasti
                    self._ls_created = _monotonic()
                    self._ls_link = link  # last: origin_of reads it first
                else:
                    _set_origin(self, tracker.make_origin(loop))
                if kwargs.get("eager_start") and loop is not None and loop.is_running():
                    m = getattr(loop, "_loopscope_metrics", None)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            if m is None:
                super().__init__(coro, loop=loop, **kwargs)
                ended = False
            else:
                n0 = m.nested
                t0 = _monotonic()
                super().__init__(coro, loop=loop, **kwargs)
                t1 = _monotonic()
                try:
                    ended = tracker.eager_step(m, self, t0, t1, n0)
                except BaseException as e:  # noqa: BLE001
                    tracker.note_error(e)
                    ended = False
            # task_register comes here, once the task is a valid object (after
            # its eager first step), and before its end if that step ended it.
            try:
                if hooks.register:
                    hooks.call_register(self)
                if ended:
                    note_end(m, self, t1)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)

        def set_name(self, value: Any) -> None:
            if value is None and sys.version_info[:2] == (3, 13):
                return  # see TrackedTask.set_name
            _Task.set_name(self, value)
            cell = getattr(self, "_ls_name_cell", None)
            if cell is not None:
                cell[0] = self.get_name()

        def __del__(self) -> None:
            registry_discard(self)  # first: see _speedups.c, "The task registry"
            try:
                if not self._ls_ended:
                    # a clean end through the done ring's budget, like every
                    # other clean end (note_end)
                    note_end(metrics_get(id(self.get_loop())), self, None)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            _task_del(self)

    if compiled and one_frame and isinstance(_Task.__dict__.get("__init__"), WrapperDescriptorType):
        # The same __init__ and __del__ in C (agent/_speedups.c, "EagerInit"):
        # a server makes an eager task per request.  The __init__ becomes
        # the class's tp_init; the Python one above stays in its dict, for
        # subclasses and for when the install is refused.
        EagerTrackedTask.__del__ = compiled_del(EagerTrackedTask)  # type: ignore[method-assign]
        eager_init = _speedups.EagerInit(
            cls=EagerTrackedTask,
            track_cls=TrackedTask,
            skip=_code_skip,
            first_user=_first_user_frame,
            current_task=_current_task,
            link_of=tracker.link_of,
            running_loop=_get_running_loop,
            metrics_cls=LoopMetrics,
            note_end=note_end,
            clean_end=clean_end,
            budget=budget,
            hooks=hooks,
            note_error=tracker.note_error,
            fine_limit=FINE_LIMIT,
            bounds=BOUNDS,
            name_cell=_EAGER_NAME_CELL,
            coro_qualname=CoroutineType.__dict__["__qualname__"],
            metrics=tracker.metrics,
        )
        if _speedups.eager_init_install(_Task, eager_init) and cfg.exact_tasks:
            # the owner of exact tasks' records, once the agent enables them
            # (Tracker.enable_exact); called like the class, it makes exact
            # eager tasks
            tracker.exact_maker = eager_init

    def _record_cancel(task: Any, msg: Any) -> None:
        rec = getattr(task, "_ls_cancel", None)
        if rec is not None:
            rec[C_COUNT] += 1
            return
        loop = task.get_loop()
        by = _current_task(loop)
        caller = _getframe(2)
        # The C cancel() of an awaiting task forwards to the awaited task's
        # cancel() with no Python frame in between: skip our own frames.
        while caller is not None and caller.f_code.co_filename.startswith(_SKIP_DIRS[1]):
            caller = caller.f_back
        by_frames = raw_stack_of_frame(caller, cfg.max_frames)
        victim = raw_coro_stack(coro_of(task), cfg.max_frames)
        task._ls_cancel = [
            _monotonic(),
            id(by) if by is not None else None,
            by.get_name() if by is not None else None,
            by_frames,
            None if msg is None else str(msg)[:500],
            victim,
            1,
            False,
        ]
        tracker.cancelling.append(weakref.ref(task))

    def exact_cancel(task: Any, msg: Any) -> None:
        """``cancel`` of an exact task with a record (``_speedups.ExactCancel``
        calls it, then asyncio's): ``TrackedTask.cancel``'s record, from a
        frame of the same depth (``_record_cancel`` looks two frames up)."""
        try:
            if not task.done():
                _record_cancel(task, msg)
        except BaseException as e:  # noqa: BLE001
            tracker.note_error(e)

    tracker.exact_cancel = exact_cancel

    # asyncio's repr and its log lines ("Task exception was never retrieved",
    # "<Task pending name=…>") use the class name: keep them word for word.
    for klass in (TrackedTask, DelTrackedTask, EagerTrackedTask):
        klass.__name__ = klass.__qualname__ = "Task"
        klass.__module__ = "loopscope.agent.tracker"
        # asyncio's own ``result`` in each class's own dict: a task awaiting
        # one of ours (aiohttp's connection task awaits each request's) is
        # woken by asyncio's C task_wakeup, which, for a task not exactly
        # asyncio.Task, calls result() by a name string made for the call.
        # That string misses the type cache, so the lookup walked the MRO
        # dict by dict, six classes up to Future; found in the first dict it
        # is one lookup: ~350 instructions less per awaited task on 3.13
        # (BENCHMARKS.md, fourteenth session).
        klass.result = _Task.result  # type: ignore[method-assign]
        if compiled:
            # asyncio's C methods then find their module state at the
            # task's own class, not four classes up (_speedups.c)
            _speedups.share_module(klass, _Task)
    if compiled:
        _speedups.share_module(base, _Task)

    # 3.14+: list our tasks where a query can read them without all_tasks
    # (taskindex.py).  Only with the compiled parts, and only where
    # DelTrackedTask's __del__ is the compiled one, which unlists the task.
    if (
        _speedups is not None
        and cfg.speedups
        and isinstance(DelTrackedTask.__dict__.get("__del__"), getattr(_speedups, "TaskDel", ()))
        and INDEX.enable(_speedups, _Task, (TrackedTask,), (EagerTrackedTask, DelTrackedTask))
    ):
        registry_add = _speedups.registry_add
        tracker.registry_add = registry_add
    else:
        INDEX.disable()
    return TrackedTask, DelTrackedTask, EagerTrackedTask


#: Whether an eager task needs its name cell (see EagerTrackedTask): on
#: 3.12 and 3.13 the loop names a factory-made task after its eager first
#: step, whose children must see the name given later; from 3.14 the name
#: reaches the constructor, and a list per task (one more object for the
#: young collections, per request on aiohttp) buys nothing.
_EAGER_NAME_CELL = sys.version_info < (3, 14)


def _code_skipped(code: CodeType) -> bool:
    """Whether frames of ``code`` are skipped when looking for a creation
    site, cached by code identity (hashing a code object hashes its whole
    content, so a set of code objects would be slow)."""
    entry = _code_skip.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    fn = code.co_filename
    skipped = fn.startswith(_SKIP_DIRS) or fn == "<frozen runpy>" or (bool(_SITE_SKIP_DIRS) and fn.startswith(_SITE_SKIP_DIRS))
    if len(_code_skip) < 10_000:
        _code_skip[id(code)] = (code, skipped)
    return skipped


_code_skip: dict[int, tuple[CodeType, bool]] = {}
#: Libraries that create tasks for their users (anyio's ``start_soon``):
#: their frames are passed over when finding a task's creation site.
_SITE_SKIP_DIRS: tuple[str, ...] = ()


def skip_for_task_sites(directory: str) -> None:
    """Pass over ``directory``'s frames when finding where a task was
    created: the site of a task anyio spawns is the user's ``start_soon``,
    not anyio's ``_spawn``.  The walk costs only the tasks such a library
    makes (the per-code verdict is cached); the cache is emptied so that
    codes judged before count too."""
    global _SITE_SKIP_DIRS
    if directory not in _SITE_SKIP_DIRS:
        _SITE_SKIP_DIRS = (*_SITE_SKIP_DIRS, directory)
        _code_skip.clear()
        if _speedups is not None:
            _speedups.code_cache_clear()  # the compiled walk's copy of the verdicts


def _first_user_frame(f: FrameType | None) -> FrameType | None:
    """``f`` or the first of its callers that is not asyncio's or ours.

    A code already judged is read from the cache here, without a call per
    frame: eager tasks walk from their constructor on every creation."""
    while f is not None:
        c = f.f_code
        e = _code_skip.get(id(c))
        if e is not None and e[0] is c:
            if not e[1]:
                return f
        elif not _code_skipped(c):
            return f
        f = f.f_back
    return None


def factory_depth(loop: Any) -> int:
    """How many frames above the factory the caller of ``create_task`` is.

    ``BaseEventLoop.create_task`` is a Python method that calls the factory,
    so its caller is two frames up; uvloop's is compiled (no frame), so one.
    Starting the walk there matters: every frame the walk touches is
    materialised as a frame object, the main cost of recording a site.
    """
    create = getattr(type(loop), "create_task", None)
    return 2 if create is base_events.BaseEventLoop.create_task else 1


def make_factory(tracker: Tracker, inner: Callable[..., Any] | None, loop: Any = None, hooked: bool = False) -> Callable[..., Any]:
    """A task factory that records origins, chaining to ``inner`` if given.

    ``hooked`` says the loop's steps go through the step hook, which records
    task ends; otherwise tasks get a class that records them on release.
    The default path constructs the class directly; with an eager inner
    factory it builds an eager factory over ``EagerTrackedTask``; with any
    other inner factory, that factory makes the task and the origin goes into
    a weak side table (slower, but correct).
    """
    # the class tasks are built from when no inner factory makes them
    cls = tracker.task_class if hooked or inner is not None else del_class_for(tracker, loop)
    eager_cls = tracker.eager_new  # the class, or what makes exact tasks (Tracker.enable_exact)
    make_origin = tracker.make_origin
    hooks = tracker.hooks
    counter = itertools.count(1)
    bump = counter.__next__
    depth = factory_depth(loop) if loop is not None else 1

    if inner is None and tracker.config.creation_frames == 1:
        track = make_track(tracker, bump, timed=hooked)
        if tracker.exact_on:
            cls = _Task  # track() keeps its record beside it (Tracker.enable_exact)
        # exact eager tasks told their creation site's frame (EagerInit.at):
        # the constructor then makes no frame object for its caller
        eager_at = eager_cls.at if _speedups is not None and isinstance(eager_cls, _speedups.EagerInit) else None

        def loopscope_task_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            if kwargs and kwargs.get("eager_start"):
                # 3.14+: create_task(..., eager_start=True) runs the first
                # step inside the constructor: the origin must exist first.
                bump()
                if eager_at is not None:
                    return eager_at(_getframe(depth), coro=coro, loop=loop, **kwargs)
                return eager_cls(coro, loop=loop, **kwargs)
            task = cls(coro, loop=loop, **kwargs)
            track(task, loop, _getframe(depth))
            return task

        # What agent/spawn.py needs to build tasks for this factory without
        # calling it: asyncio.create_task and loop.create_task, inlined.
        loopscope_task_factory.loopscope_fast = (loopscope_task_factory, cls, track, eager_cls, bump, eager_at)  # type: ignore[attr-defined]

    elif inner is None:

        def loopscope_task_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            if kwargs and kwargs.get("eager_start"):
                bump()
                return eager_cls(coro, loop=loop, **kwargs)
            task = cls(coro, loop=loop, **kwargs)
            try:
                _init_slots(task)
                if tracker.registry_add is not None:
                    tracker.registry_add(task)
                _set_origin(task, make_origin(loop))
                bump()
                if hooks.register:
                    hooks.call_register(task)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            return task

    else:
        eager = _eager_factory_for(tracker, inner)

        def loopscope_task_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            if eager is not None:
                task = eager(loop, coro, **kwargs)  # registers itself (see EagerTrackedTask)
                bump()
                return task
            task = inner(loop, coro, **kwargs)
            try:
                origin = make_origin(loop)
                if isinstance(task, tracker.task_class):
                    _init_slots(task)
                    if tracker.registry_add is not None and not isinstance(task, tracker.eager_task_class):
                        tracker.registry_add(task)  # (an eager one listed itself)
                    _set_origin(task, origin)
                else:
                    tracker.foreign[task] = origin
                    INDEX.note_outsider(task)
                bump()
                if hooks.register:
                    hooks.call_register(task)
            except BaseException as e:  # noqa: BLE001
                tracker.note_error(e)
            return task

    loopscope_task_factory.loopscope_inner = inner  # type: ignore[attr-defined]
    loopscope_task_factory.loopscope_created = counter  # type: ignore[attr-defined]
    loopscope_task_factory.loopscope_hooked = hooked  # type: ignore[attr-defined]
    return loopscope_task_factory


def make_track(tracker: Tracker, bump: Callable[[], int], timed: bool) -> Callable[[Any, Any, FrameType], None]:
    """The per-task recording every fast creation path shares: slots, the
    creation site found from frame ``f`` (the caller of whatever made the
    task), the parent's link, the count, ``task_register``.  No origin
    tuple: four slots, read back by ``origin_of``.

    The hot path, measured: slots written rather than read-when-unset (a
    missing slot raises AttributeError inside getattr: ~0.4 µs), f_lasti
    not f_lineno, the walk starting at the caller and frames classified by
    code identity.  See BENCHMARKS.md before changing it.

    Only ``_ls_steps`` and ``_ls_first`` of the per-step slots are written
    (``timed``: the loop's steps are hooked): the step hook writes the
    others at the first step, and readers treat ``_ls_steps == 0`` as
    "never ran" (``task_stats``).  Untimed tasks get no per-step slots.
    (Writing ``_ls_first`` too measured 1,000 instructions per task
    *cheaper* than ``_ls_steps`` alone on 3.11, for reasons not found.)

    Where the extension was built (and ``speedups`` is on) this returns
    ``_speedups.Track``: the same lines in C, calling back into the same
    helpers (``_first_user_frame``, ``link_of``) for what is uncommon.  The
    two must stay line for line the same; the test suite runs both.
    """
    link_of = tracker.link_of
    skip_get = _code_skip.get
    create_task_code = spawn.original_create_task.__code__
    ours_code = spawn.CREATE_TASK_CODE
    hooks = tracker.hooks
    note_error = tracker.note_error
    if _speedups is not None and tracker.config.speedups:
        return _speedups.Track(  # type: ignore[no-any-return]
            cls=tracker.task_class,
            skip=_code_skip,
            first_user=_first_user_frame,
            create_code=create_task_code,
            ours_code=ours_code,
            current_task=_current_task,
            link_of=link_of,
            bump=bump,
            hooks=hooks,
            note_error=note_error,
            timed=timed,
        )

    def track(task: Any, loop: Any, f: FrameType) -> None:
        try:
            task._ls_cancel = None
            if timed:
                task._ls_steps = 0
                task._ls_first = None
            c = f.f_code
            if c is create_task_code or c is ours_code:  # asyncio.create_task: the user is next
                f = f.f_back
                c = f.f_code
            e = skip_get(id(c))
            if e is None or e[0] is not c or e[1]:
                f = _first_user_frame(f)
            if f is None:
                code = lasti = None  # no user frame: dropped below
            else:
                code = f.f_code
                lasti = f.f_lasti
            parent = _current_task(loop)
            if parent is None:
                link = None
            else:
                try:
                    link = parent._ls_plink
                except AttributeError:  # its first child, or not one of ours
                    link = link_of(parent)
            task._ls_code = code
            task._ls_lasti = lasti
            task._ls_created = _monotonic()
            task._ls_link = link  # last: origin_of reads it first
            bump()
            if hooks.register:
                hooks.call_register(task)
        except BaseException as e:  # noqa: BLE001
            note_error(e)

    return track


def del_class_for(tracker: Tracker, loop: Any) -> type:
    """A subclass of ``DelTrackedTask`` that knows ``loop``'s metrics, so
    that ``__del__`` finds them without a lookup per task."""
    m = tracker.metrics.get(id(loop)) if loop is not None else None
    if m is None:
        return tracker.del_task_class
    # asyncio's ``result`` in the class's own dict: see _make_task_classes
    klass = type(tracker.del_task_class)("Task", (tracker.del_task_class,), {"__slots__": (), "_ls_m": m, "result": _Task.result})
    klass.__module__ = tracker.del_task_class.__module__
    if _speedups is not None and tracker.config.speedups:
        _speedups.share_module(klass, _Task)  # see _make_task_classes
    return klass


def _init_slots(task: Any) -> None:
    task._ls_cancel = None
    task._ls_steps = 0
    task._ls_busy = 0.0
    task._ls_longest = 0.0
    task._ls_first = None


def _eager_factory_for(tracker: Tracker, inner: Callable[..., Any]) -> Callable[..., Any] | None:
    """If ``inner`` is asyncio's eager factory, an equivalent over our class."""
    eager = getattr(asyncio, "eager_task_factory", None)
    if eager is None or inner is not eager:
        return None
    return asyncio.create_eager_task_factory(tracker.eager_task_class)  # type: ignore[attr-defined]


def is_our_factory(factory: Any) -> bool:
    return callable(factory) and getattr(factory, "__name__", "") == "loopscope_task_factory"


def code_lineno(code: CodeType, lasti: int) -> int:
    """Line number for a bytecode offset, decoded only when asked."""
    if lasti < 0:
        return code.co_firstlineno
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno
