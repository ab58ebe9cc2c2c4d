"""The loops an agent watches: task factory, heartbeat, blocked detection.

A loop proves it is alive by running a tiny timer callback every
``heartbeat`` seconds.  The server thread compares the last beat with the
clock: a running loop silent for longer than ``blocked_after`` is blocked,
since the moment its next beat was due, and the loop thread's current Python
stack (``sys._current_frames``) is the code blocking it.  This needs no help
from the blocked loop, which is the whole point.
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import base_events
import time
import weakref
from collections.abc import Callable, Collection
from typing import Any

from ..model import LoopInfo
from .config import Config
from .introspect import frames_of_thread
from .metrics import LoopMetrics
from . import spawn
from .taskindex import INDEX
from .tracker import Tracker, _speedups, is_our_factory, make_factory


def metrics_moved() -> None:
    """Tell the compiled step hooks that a loop's ``_loopscope_metrics``
    changed: they remember the last few loops' (``_speedups.c``,
    ``loop_metrics``)."""
    if _speedups is not None:
        _speedups.metrics_moved()

_monotonic = time.monotonic


class LoopState:
    """What the agent keeps about one loop; never a strong ref to the loop."""

    __slots__ = (
        "ref",
        "id",
        "kind",
        "thread_id",
        "thread_ident",
        "thread_name",
        "last_beat",
        "expected",
        "handle",
        "inner_factory",
        "metrics",
        "hooked",
        "__weakref__",
    )

    def __init__(self, loop: Any) -> None:
        self.ref = weakref.ref(loop)
        self.id = hex(id(loop))
        self.kind = f"{type(loop).__module__}.{type(loop).__qualname__}"
        self.thread_id: int | None = None  # native id, as ps/top show it
        self.thread_ident: int | None = None  # Python's, for sys._current_frames
        self.thread_name: str | None = None
        self.last_beat = _monotonic()
        self.expected = 0.0  # when the next beat is due
        self.handle: Any = None
        self.inner_factory: Any = None
        self.metrics: LoopMetrics | None = None
        self.hooked = False


class LoopRegistry:
    def __init__(self, config: Config, tracker: Tracker) -> None:
        self.config = config
        self.tracker = tracker
        #: Set by the agent when the step hook is installed (metrics on).
        self.steps_hooked = False
        self._states: dict[int, LoopState] = {}
        self._lock = threading.Lock()
        #: Called with each loop as it starts running, on its thread (the
        #: group tracker's async generator hook for uvloop).
        self.running_hooks: list[Callable[[Any], None]] = []

    def states(self) -> list[tuple[Any, LoopState]]:
        out = []
        with self._lock:
            items = list(self._states.items())
        for key, st in items:
            loop = st.ref()
            if loop is None or loop.is_closed():
                with self._lock:
                    self._states.pop(key, None)
                spawn.forget(key)
                INDEX.forget(key)
                continue
            out.append((loop, st))
        return out

    def attach(self, loop: Any) -> LoopState:
        """Track ``loop``: chain our task factory and start its heartbeat."""
        with self._lock:
            st = self._states.get(id(loop))
            if st is not None and st.ref() is loop:
                return st
            st = LoopState(loop)
            self._states[id(loop)] = st
        st.hooked = self.steps_hooked and isinstance(loop, base_events.BaseEventLoop)
        compiled = _speedups is not None and self.config.speedups
        st.metrics = LoopMetrics(
            slow=self.config.slow_step, series=self.config.series_seconds, exact=st.hooked,
            counter=_speedups.Counts if compiled else None,
        )
        self.tracker.metrics[id(loop)] = st.metrics
        if st.hooked:
            try:
                loop._loopscope_metrics = st.metrics
            except (AttributeError, TypeError):
                st.hooked = False
                st.metrics.exact = False
            metrics_moved()
        current = real_factory(loop)
        if not is_our_factory(current):
            st.inner_factory = current
            loop.set_task_factory(make_factory(self.tracker, current, loop, st.hooked))
        if INDEX.active:
            # the tasks it had before our factory (none, unless attached to
            # a running program): the index's first outsiders
            INDEX.saw_all(loop, live_task_set(loop))
        return st

    def on_running(self, loop: Any) -> None:
        """The loop starts running in this thread: note it and start beating."""
        st = self.attach(loop)
        st.thread_id = threading.get_native_id()
        st.thread_ident = threading.get_ident()
        st.thread_name = threading.current_thread().name
        st.last_beat = _monotonic()
        st.expected = 0.0
        if st.handle is None or st.handle.cancelled():
            self._beat(weakref.ref(st))
        for hook in self.running_hooks:
            try:
                hook(loop)
            except Exception as e:  # noqa: BLE001
                self.tracker.note_error(e)

    def _beat(self, st_ref: Any) -> None:
        st = st_ref()
        if st is None:
            return
        loop = st.ref()
        if loop is None or loop.is_closed():
            return
        now = _monotonic()
        st.last_beat = now
        m = st.metrics
        if st.expected and m is not None:
            # The heartbeat doubles as the lag probe: how late did it run?
            lag = now - st.expected
            m.note_lag(lag)
            if not st.hooked and lag > m.slow:
                # No step hook (uvloop): the late beat is the blocking episode.
                m.long_step(None, st.expected, lag)
        st.expected = now + self.config.heartbeat
        factory = real_factory(loop)
        if not is_our_factory(factory):
            # uvloop's set_task_factory cannot be patched: a program that sets
            # its own factory replaced ours; chain to it again.
            try:
                st.inner_factory = factory
                loop.set_task_factory(make_factory(self.tracker, factory, loop, st.hooked))
            except Exception as e:  # noqa: BLE001
                self.tracker.note_error(e)
        try:
            st.handle = loop.call_later(self.config.heartbeat, self._beat, st_ref)
        except RuntimeError:  # loop closed under us
            st.handle = None

    def forget_all(self) -> None:
        """Drop every loop's state without touching the loops (after fork)."""
        self._lock = threading.Lock()
        self._states.clear()
        self.tracker.metrics.clear()

    def detach_all(self) -> None:
        for loop, st in self.states():
            if st.handle is not None:
                st.handle.cancel()
                st.handle = None
            factory = real_factory(loop)
            if is_our_factory(factory):
                loop.set_task_factory(getattr(factory, "loopscope_inner", None))
            spawn.forget(id(loop))
            INDEX.forget(id(loop))
            for attr in ("_loopscope_metrics", "_loopscope_fast"):
                try:
                    delattr(loop, attr)
                except (AttributeError, TypeError):
                    pass
            metrics_moved()
        with self._lock:
            self._states.clear()
        self.tracker.metrics.clear()

    def created_count(self, loop: Any) -> int:
        counter = creation_counter(loop)
        return 0 if counter is None else counted(counter)

    def info(self, loop: Any, st: LoopState, live: int | None = None) -> LoopInfo:
        running = loop.is_running()
        info = LoopInfo(
            id=st.id,
            kind=st.kind,
            thread_id=st.thread_id,
            thread_name=st.thread_name,
            running=running,
            live_tasks=live if live is not None else len(live_tasks(loop)),
        )
        if running:
            silent = self.blocked_for(st)
            if silent > self.config.blocked_after:
                info.blocked = True
                info.blocked_for = silent
                info.blocked_since = time.time() - silent
                if st.thread_ident is not None:
                    info.blocked_stack = frames_of_thread(st.thread_ident)
        return info

    def blocked_for(self, st: LoopState) -> float:
        """How long the loop has been silent since its heartbeat was due."""
        return _monotonic() - st.last_beat - self.config.heartbeat


def real_factory(loop: Any) -> Any:
    """The factory the loop will call, ours included: the agent hides its
    factory from ``get_task_factory``, so ask the unpatched method."""
    if isinstance(loop, base_events.BaseEventLoop):
        return loop._task_factory
    getter = getattr(type(loop).get_task_factory, "loopscope_original", None)
    return getter(loop) if getter is not None else loop.get_task_factory()


def creation_counter(loop: Any) -> Any:
    """Our factory's ``itertools.count`` of the tasks it made on ``loop``
    (None if the loop's factory is not ours)."""
    return getattr(real_factory(loop), "loopscope_created", None)


def counted(counter: Any) -> int:
    """How many tasks a creation counter has counted: its repr is the
    only read of an ``itertools.count`` that does not advance it."""
    return int(repr(counter)[6:-1]) - 1


def live_tasks(loop: Any) -> Collection[Any]:
    """The loop's unfinished tasks, read from any thread.

    On 3.14+, once the loop has many tasks, from the task index
    (taskindex.py): ``all_tasks`` is one C call there that holds the GIL
    (9-14 ms per 100,000 tasks).  Otherwise the set ``all_tasks`` made, not
    a copy of it; callers iterate it in Python, where the GIL changes hands.
    """
    tasks = INDEX.tasks(loop)
    if tasks is not None:
        return tasks
    found = live_task_set(loop)
    INDEX.saw_all(loop, found)
    return found


def live_task_set(loop: Any) -> set[Any]:
    """``asyncio.all_tasks(loop)``, read from any thread.

    It iterates a WeakSet on 3.11–3.13, which another thread may change
    under us; it retries internally, and we retry too.
    """
    for _ in range(10):
        try:
            return asyncio.all_tasks(loop)
        except RuntimeError:
            continue
    return set()
