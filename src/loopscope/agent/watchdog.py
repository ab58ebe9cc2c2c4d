"""The watchdog thread: sees a stuck loop while it is stuck, and samples
the health series once a second.

The loop cannot report on itself while one of its steps blocks it, and the
stack after the step returned says nothing about what blocked it.  So a
thread watches: when the silence since a loop's heartbeat was due passes
half the ``slow_step`` threshold, it captures the loop thread's Python stack
with ``sys._current_frames()``, and again every second while the block
lasts.  The step hook, when the step finally returns, files the capture
with the blocking step.

It sleeps until the earliest moment a loop could be late (its next beat
plus half the threshold) rather than polling: every wake-up takes the GIL
from the loop, and on a busy loop each costs far more than the poll itself
(measured on a 2-core VM: polling every 20 ms slowed a CPU-bound queue
ping-pong by 18 %; see BENCHMARKS.md).  A healthy loop's beats keep moving
that moment forward, so the thread wakes 10 to 20 times a second; a stuck
loop is seen at the moment it becomes late, then every ``watchdog``
seconds at most.

This thread only gets the GIL when the loop releases it (at the latest
after the interpreter's switch interval, 5 ms): good for catching a stall
with its stack, useless for attributing busy time, which the step hook
measures.  Each poll reads a few attributes per loop: no work proportional
to the number of tasks.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from .introspect import frames_of_thread
from .metrics import percentile

_monotonic = time.monotonic


class Watchdog:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # per loop id: (mono, busy, cpu, counts copy) at the last sample
        self._last: dict[str, tuple] = {}

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopscope-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = max(0.001, self.agent.config.watchdog)
        next_sample = _monotonic() + 1.0
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.poll()
                now = _monotonic()
                self.agent.tracker.refill_done(now)
                if now >= next_sample:
                    next_sample = now + 1.0
                    self.sample()
                wait = max(interval, min(self.next_due(), next_sample) - _monotonic())
            except Exception as e:  # noqa: BLE001 - never into the host
                wait = interval
                self.agent.tracker.note_error(e)

    def next_due(self) -> float:
        """The earliest moment ``poll`` could find a loop late: its next
        heartbeat plus half the slow-step threshold (inf with no loop)."""
        due = float("inf")
        for _loop, st in self.agent.loops.states():
            m = st.metrics
            if m is not None and st.thread_ident is not None and st.expected:
                due = min(due, st.expected + m.slow / 2)
        return due

    def poll(self) -> None:
        """Capture the stack of any loop whose heartbeat is overdue by more
        than half the slow-step threshold (the loop is stuck in a step, or
        drowning in short ones: the step hook tells them apart afterwards,
        by keeping a capture only for a long step that spans it)."""
        registry = self.agent.loops
        for loop, st in registry.states():
            m = st.metrics
            if m is None or st.thread_ident is None or not st.expected:
                continue
            now = _monotonic()
            stuck = now - st.expected
            if stuck <= m.slow / 2:
                continue
            cap = m.block_capture
            if cap is None or cap[0] != st.expected or now - cap[2] >= 1.0:
                stack = frames_of_thread(st.thread_ident)
                # the task weakly: a capture no long step claims stays until
                # the next one, and must not keep a finished task alive
                m.block_capture = (st.expected, stack, _monotonic(), _weak(_current_task(loop)))

    def sample(self) -> None:
        """One point of each health series, per loop."""
        registry = self.agent.loops
        wall = time.time()
        for loop, st in registry.states():
            m = st.metrics
            if m is None:
                continue
            now = _monotonic()
            cpu = _thread_cpu(st.thread_ident)
            counts = [c for _b, c in m.buckets()]
            # the first sample compares with the loop's attach time
            last = self._last.get(st.id) or (m.started, 0.0, None, [0] * len(counts))
            self._last[st.id] = (now, m.busy, cpu, counts)
            lag = m.lag_window
            m.lag_window = 0.0
            dt = now - last[0]
            if dt <= 0:
                continue
            if st.hooked:
                util = (m.busy - last[1]) / dt
            elif cpu is not None and last[2] is not None:
                util = (cpu - last[2]) / dt
            else:
                util = None
            delta = [(b, c - p) for (b, c), p in zip(m.buckets(), last[3])] if st.hooked else []
            p99 = percentile(delta, 0.99, m.step_max) if st.hooked else None
            s = m.series
            s.t.append(wall)
            s.lag.append(lag)
            s.utilisation.append(None if util is None else max(0.0, min(1.0, util)))
            s.p99.append(p99)
            s.live.append(live_count(registry, loop, m))


def live_count(registry: Any, loop: Any, m: Any) -> int:
    """Live tasks made by our factory: created minus ended (no task scan)."""
    created = registry.created_count(loop)
    return max(0, created - m.done - m.failed - m.cancelled - m.destroyed)


def _thread_cpu(ident: int | None) -> float | None:
    """CPU seconds of a thread (utilisation where steps are not timed)."""
    if ident is None:
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, ValueError):
        return None


def _current_task(loop: Any) -> Any:
    import asyncio

    try:
        return asyncio.current_task(loop)
    except Exception:  # noqa: BLE001
        return None


def _weak(task: Any) -> Any:
    """A callable returning ``task`` while it lives (None for no task)."""
    if task is None:
        return _none
    try:
        return weakref.ref(task)
    except TypeError:  # a task type without weak references
        return lambda: task


def _none() -> None:
    return None
