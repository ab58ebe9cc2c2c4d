"""Per-loop counters, the step-time histogram and the health time series.

Everything the step hook touches lives in ``LoopMetrics`` slots: attribute
access on a ``__slots__`` object is specialised by the interpreter (3.11+)
to a few machine instructions, cheaper than a dict or a list of fields.
The numbers it writes on every step or task end (``busy``, ``nested``,
``done``) are C numbers where the compiled parts are built: its base,
``_speedups.MetricsCore``, keeps them without an object per value.

The step histogram has two levels, for the hot path's sake:

* steps under 1 ms (nearly all of them) go to ``fine``, one bucket per
  microsecond, indexed by ``floor(d * 1e6)``: a multiply and a conversion,
  measured cheaper than any search (``math.floor``, not ``int()``: calling
  the ``int`` type cost 580 more instructions per step on 3.11, 560 on 3.12,
  40-70 on 3.13-3.15; the same result, since ``d`` is never negative);
* longer steps go to ``counts``, log-spaced buckets (ten per decade up to
  100 s) found with ``bisect``.

``merged`` turns both into one list of (upper bound, count), from which
percentiles are interpolated (accurate to the bucket width: 1 µs below 1 ms,
26 % above) and exporters' cumulative buckets are summed exactly: every
export bound is a whole number of microseconds or a member of BOUNDS.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import weakref
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from .compiled import speedups

_floor = math.floor

#: Ten bounds per decade: 1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8 (× 10^k).
_MANTISSAS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)
BOUNDS: tuple[float, ...] = tuple(round(m * 10.0**e, 12) for e in range(-6, 2) for m in _MANTISSAS) + (100.0,)
#: Steps shorter than this are counted per microsecond.
FINE_LIMIT = 1e-3
FINE_BUCKETS = 1000
#: The bounds exporters publish (Prometheus ``le``, OTel explicit buckets):
#: 1-2.5-5 per decade from 10 µs to 10 s.
EXPORT_BOUNDS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def new_counts() -> list[int]:
    """Bucket i counts steps with BOUNDS[i-1] < d <= BOUNDS[i]; the last one
    is everything over 100 s."""
    return [0] * (len(BOUNDS) + 1)


def new_fine() -> list[int]:
    """Bucket i counts steps with i µs <= d < (i + 1) µs."""
    return [0] * FINE_BUCKETS


def merged(fine: list[int], counts: list[int]) -> list[tuple[float, int]]:
    """(upper bound in seconds, count) for every bucket, in order."""
    out = [((i + 1) * 1e-6, c) for i, c in enumerate(fine)]
    for j, c in enumerate(counts):
        upper = BOUNDS[j] if j < len(BOUNDS) else float("inf")
        if upper > FINE_LIMIT:
            out.append((upper, c))
    return out


def percentile(buckets: list[tuple[float, int]], q: float, hi: float = 0.0) -> float | None:
    """The q-quantile (0..1) of a bucketed distribution, interpolated
    linearly inside its bucket and clamped to the observed maximum."""
    total = sum(c for _b, c in buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    low = 0.0
    for upper, c in buckets:
        if c and seen + c >= rank:
            if upper == float("inf"):
                upper = max(hi, low)
            value = low + (upper - low) * ((rank - seen) / c)
            return min(value, hi) if hi > 0 else value
        seen += c
        low = upper
    return hi or low


def lowest(buckets: list[tuple[float, int]]) -> float | None:
    """The lower bound of the first non-empty bucket (the hook keeps no min)."""
    low = 0.0
    for upper, c in buckets:
        if c:
            return low
        low = upper
    return None


def highest(buckets: list[tuple[float, int]]) -> float | None:
    """The upper bound of the last non-empty bucket."""
    for upper, c in reversed(buckets):
        if c:
            return upper
    return None


def cumulative(buckets: list[tuple[float, int]], bounds: tuple[float, ...] = EXPORT_BOUNDS) -> list[tuple[float, int]]:
    """Cumulative counts at ``bounds``: exact, since every bound is a bucket
    edge (whole microseconds below 1 ms, members of BOUNDS above)."""
    out = []
    acc = 0
    i = 0
    for b in bounds:
        while i < len(buckets) and buckets[i][0] <= b * (1 + 1e-9):
            acc += buckets[i][1]
            i += 1
        out.append((b, acc))
    return out


class Series:
    """One sample per second, for the last ``size`` seconds (a ring)."""

    __slots__ = ("t", "lag", "utilisation", "p99", "live")

    def __init__(self, size: int) -> None:
        self.t: collections.deque = collections.deque(maxlen=size)
        self.lag: collections.deque = collections.deque(maxlen=size)
        self.utilisation: collections.deque = collections.deque(maxlen=size)
        self.p99: collections.deque = collections.deque(maxlen=size)
        self.live: collections.deque = collections.deque(maxlen=size)

    def as_json(self) -> dict[str, list]:
        return {name: list(getattr(self, name)) for name in self.__slots__}


class _SlotsCore:
    """``_speedups.MetricsCore`` where the compiled parts are missing: the
    same three attributes, as slots."""

    __slots__ = ("busy", "nested", "done")


_Core: type = _SlotsCore if speedups is None else speedups.MetricsCore


class LoopMetrics(_Core):
    """What the agent measures about one loop.

    Written by the loop's thread (the step hook, the heartbeat), read by the
    watchdog and server threads.  Reads are not atomic as a whole; a health
    report may mix values a step apart, which is fine for monitoring.
    """

    __slots__ = (
        # the step hook's hot fields (with busy and nested, in _Core)
        "fine",
        "counts",
        "step_max",
        "slow",
        # task ends by outcome (tasks made by our factory; see docs/metrics.md;
        # done is in _Core)
        "failed",
        "cancelled",
        "destroyed",
        # lag probe (the heartbeat)
        "lag_last",
        "lag_max",
        "lag_sum",
        "lag_n",
        "lag_window",
        # blocking steps: recent ones, and the watchdog's capture of the current one
        "blocking",
        "slow_count",
        "block_capture",
        "exact",
        "series",
        "started",
        "__weakref__",
    )

    def __init__(
        self, *, slow: float, history: int = 100, series: int = 600, exact: bool = True, counter: Callable[[int], Any] | None = None
    ) -> None:
        self.busy = 0.0
        self.nested = 0.0
        # the histogram's buckets: lists, or with the compiled step hook its
        # Counts (one C array each, the same sequence of ints from Python)
        self.fine: Any = new_fine() if counter is None else counter(FINE_BUCKETS)
        self.counts: Any = new_counts() if counter is None else counter(len(BOUNDS) + 1)
        self.step_max = 0.0
        self.slow = slow if slow > 0 else float("inf")
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self.destroyed = 0
        self.lag_last = 0.0
        self.lag_max = 0.0
        self.lag_sum = 0.0
        self.lag_n = 0
        self.lag_window = 0.0  # the worst lag since the watchdog's last sample
        self.blocking: collections.deque = collections.deque(maxlen=max(1, history))
        self.slow_count = 0
        self.block_capture: Any = None
        self.exact = exact
        self.series = Series(max(1, series))
        self.started = time.monotonic()

    def add_step(self, what: Any, t0: float, d: float) -> None:
        """File one step of ``d`` seconds in the histogram.  The step hook's
        plain variant inlines these same lines (a call per step is measurable
        there); the hook-calling variant and eager first steps use this."""
        if d < FINE_LIMIT:
            self.fine[_floor(d * 1e6)] += 1
        else:
            self.counts[bisect_right(BOUNDS, d)] += 1
            if d > self.step_max:
                self.step_max = d
            if d > self.slow:
                self.long_step(what, t0, d)

    def long_step(self, what: Any, t0: float, d: float) -> None:
        """Record a step longer than ``slow`` (on the loop thread, after it).

        The stack comes from the watchdog, which captured it *during* the
        step (the stack after the step returned says nothing); a step shorter
        than the watchdog's poll interval may end before it is seen.
        """
        self.slow_count += 1
        cap = self.block_capture
        # the watchdog's capture belongs to this step if it was taken during it
        mine = cap is not None and t0 <= cap[2] <= t0 + d
        if what is None and mine:
            what = cap[3]()  # no step hook: the task the watchdog saw running
        self.blocking.append((t0, d, _describe(what), cap[1] if mine else None))
        if mine:
            self.block_capture = None

    def buckets(self) -> list[tuple[float, int]]:
        return merged(list(self.fine), list(self.counts))

    def note_lag(self, lag: float) -> None:
        """Called by the heartbeat with how late it ran."""
        if lag < 0.0:
            lag = 0.0
        self.lag_last = lag
        self.lag_sum += lag
        self.lag_n += 1
        if lag > self.lag_max:
            self.lag_max = lag
        if lag > self.lag_window:
            self.lag_window = lag


def _describe(what: Any) -> tuple:
    """(task id, task name, coroutine or callback name) for a step's owner:
    a task, or a Handle whose callback is a task's step or something else."""
    if what is None:
        return (None, None, None)
    task = what
    cb = getattr(what, "_callback", None)
    if cb is not None:
        task = getattr(cb, "__self__", None)
    get_name = getattr(task, "get_name", None)
    if get_name is not None and hasattr(task, "get_coro"):
        try:
            coro = task.get_coro()
            return (id(task), get_name(), getattr(coro, "__qualname__", None) or type(coro).__name__)
        except Exception:  # noqa: BLE001
            pass
    name = getattr(cb, "__qualname__", None) or type(cb).__name__
    return (None, None, name)


class Executors:
    """Executors whose saturation the user wants reported, held weakly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, weakref.ref]] = []

    def register(self, executor: Any, name: str | None = None) -> None:
        with self._lock:
            self._items = [(n, r) for n, r in self._items if r() is not None and r() is not executor]
            self._items.append((name or f"executor-{len(self._items) + 1}", weakref.ref(executor)))

    def items(self) -> list[tuple[str, Any]]:
        with self._lock:
            pairs = [(n, r()) for n, r in self._items]
        return [(n, e) for n, e in pairs if e is not None]


def executor_stats(name: str, executor: Any) -> dict[str, Any] | None:
    """Saturation of a ThreadPoolExecutor, read from its internals.

    ``active`` is the number of worker threads not idle: the executor keeps
    a semaphore counting idle workers (3.8+).  Counting ``_threads`` alone
    (as some tools do) reports every started worker as busy, or none.
    """
    threads = getattr(executor, "_threads", None)
    if threads is None:
        return None
    started = len(threads)
    idle_sem = getattr(executor, "_idle_semaphore", None)
    idle = getattr(idle_sem, "_value", 0) if idle_sem is not None else 0
    queue = getattr(executor, "_work_queue", None)
    try:
        queued = queue.qsize() if queue is not None else 0
    except Exception:  # noqa: BLE001
        queued = 0
    return {
        "name": name,
        "max_workers": getattr(executor, "_max_workers", started),
        "threads": started,
        "active": max(0, started - idle),
        "queued": queued,
    }


