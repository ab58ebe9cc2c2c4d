"""The step hook: every callback the default loop runs, timed.

``asyncio.events.Handle._run`` is the one place every callback of a
``BaseEventLoop`` goes through (``_run_once`` calls it for each ready
handle, timers included), and it is plain Python in 3.11–3.15.  Replacing
it with a copy that reads the clock around the callback gives, for every
step: its duration (histogram, busy time, utilisation), whether it was a
task's step (the callback is the task's ``__step`` wrapper or its bound
``__wakeup``, whose ``__self__`` is the task), and whether that step
finished the task, which is how task ends are recorded exactly when they
happen without a done callback per task.

The copy keeps asyncio's behaviour: the same exception handling and
message, the same ``self = None`` to break reference cycles.  Measured
alternatives and their costs are in BENCHMARKS.md; the issue's prototypes
(coroutine proxies, ``sys.monitoring``) cost more and some break
``get_coro()``.

uvloop's handles are compiled: this hook does not see its steps; see
docs/metrics.md for what is exact where.

``_speedups.StepRun`` is the plain variant compiled (agent/_speedups.c),
used when it was built and the ``speedups`` option is on: the same lines in
C cost less than asyncio's own ``Handle._run`` in Python, where the Python
variant costs 5-10 % of a spawning benchmark or an aiohttp request
(BENCHMARKS.md, "Seventh session").  The two must stay line for line the
same; the test suite runs both.
"""

from __future__ import annotations

import math
import sys
import time
from asyncio import events, format_helpers
from bisect import bisect_right
from typing import Any

from .hooks import HOOKS, Hooks
from .metrics import BOUNDS, FINE_LIMIT, LoopMetrics
from .tracker import Tracker, _speedups, _Task

_original_run = events.Handle._run
_monotonic = time.monotonic
_PENDING = "PENDING"
_FINISHED = "FINISHED"
_FORMAT_TAKES_DEBUG = sys.version_info >= (3, 13)


def _report(handle: Any, exc: BaseException) -> None:
    """asyncio's own reporting of an exception escaping a callback."""
    if _FORMAT_TAKES_DEBUG:
        cb = format_helpers._format_callback_source(handle._callback, handle._args, debug=handle._loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _task_callback_types() -> tuple[type, type]:
    """The types of the callbacks a C task schedules for its steps: the
    ``TaskStepMethWrapper`` of its first step (read from the handle a new
    task schedules, on a loop that never runs), and the bound builtin
    ``task_wakeup`` that an awaited future calls back."""
    import asyncio

    async def nothing() -> None:
        pass

    loop = asyncio.BaseEventLoop()
    try:
        coro = nothing()
        # named, so that asyncio's "Task-N" numbering is not advanced
        task = asyncio.Task(coro, loop=loop, name="loopscope-probe")
        step = type(loop._ready[-1]._callback)
        task._log_destroy_pending = False
        coro.close()
        loop._ready.clear()
    finally:
        loop._closed = True
    return step, type(len)


class StepHook:
    """Installs and removes the instrumented ``Handle._run``."""

    def __init__(self, tracker: Tracker, hooks: Hooks = HOOKS) -> None:
        self.tracker = tracker
        self.hooks = hooks
        self.installed = False
        self.fast = _make_run(tracker, with_hooks=False)
        if _speedups is not None and tracker.config.speedups:
            self.fast = _compiled_run(tracker)
        self.hooked = _make_run(tracker, with_hooks=True)
        hooks.on_change.append(self._hooks_changed)

    def install(self) -> None:
        self.installed = True
        self._hooks_changed()

    def uninstall(self) -> None:
        self.installed = False
        if self._hooks_changed in self.hooks.on_change:
            self.hooks.on_change.remove(self._hooks_changed)
        if events.Handle._run in (self.fast, self.hooked):
            events.Handle._run = _original_run

    def _hooks_changed(self) -> None:
        """Switch between the plain and the hook-calling variant, so that
        enter/leave cost nothing while nobody listens."""
        if not self.installed:
            return
        events.Handle._run = self.hooked if (self.hooks.enter or self.hooks.leave) else self.fast


_STEP_TYPE, _WAKEUP_TYPE = _task_callback_types()


def _compiled_run(tracker: Tracker) -> Any:
    """The plain variant of ``_make_run``, compiled: the same closure
    values, handed to C once."""
    return _speedups.StepRun(
        original=_original_run,
        report=_report,
        step_type=_STEP_TYPE,
        wakeup_type=_WAKEUP_TYPE,
        cls=tracker.task_class,
        eager_cls=tracker.eager_task_class,
        metrics_cls=LoopMetrics,
        handle_cls=events.Handle,
        step_end=tracker.note_end,
        clean_end=tracker.clean_end,
        budget=tracker.done_budget,
        hooks=tracker.hooks,
        note_error=tracker.note_error,
        fine_limit=FINE_LIMIT,
        bounds=BOUNDS,
    )


def _make_run(tracker: Tracker, *, with_hooks: bool) -> Any:
    """Build a ``Handle._run`` for ``tracker``; everything it touches is a
    local or a closure cell, and each line is there for a measured reason
    (BENCHMARKS.md, "step hook")."""
    step_type, wakeup_type = _STEP_TYPE, _WAKEUP_TYPE
    cls = tracker.task_class
    eager_cls = tracker.eager_task_class
    ours = tracker.ours
    step_end = tracker.note_end
    clean_end = tracker.clean_end
    budget = tracker.done_budget
    bounds = BOUNDS
    bisect = bisect_right
    floor = math.floor  # not int(): see metrics.py
    clock = _monotonic
    original = _original_run
    hooks = tracker.hooks
    fine_limit = FINE_LIMIT
    note_error = tracker.note_error

    def step_done(m: Any, task: Any, tt: type, t0: float, t1: float, d: float) -> None:
        """Account one step of one of our tasks (the hooked variant's path;
        the plain one inlines the same lines)."""
        n = task._ls_steps
        task._ls_last = t1
        if n == 0:  # the other slots are first written here (tracker.make_track)
            task._ls_first = t0 - task._ls_created
            task._ls_steps = 1
            task._ls_busy = d
            task._ls_longest = d
        else:
            task._ls_steps = n + 1
            task._ls_busy += d
            if d > task._ls_longest:
                task._ls_longest = d
        if task._state != _PENDING:
            step_end(m, task, t1)

    if not with_hooks:

        def _run(self: Any) -> None:
            try:
                m = self._loop._loopscope_metrics
            except AttributeError:
                return original(self)
            cb = self._callback
            t0 = clock()
            try:
                self._context.run(cb, *self._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _report(self, exc)
            t1 = clock()
            # try costs nothing when nothing raises (3.11+); nothing of ours
            # may ever raise into the loop
            try:
                d = t1 - t0
                m.busy += d
                if m.nested:
                    # an eager task ran its first step inside this one (timed there)
                    d = max(0.0, d - m.nested)
                    m.nested = 0.0
                if d < fine_limit:
                    m.fine[floor(d * 1e6)] += 1
                else:
                    m.counts[bisect(bounds, d)] += 1
                    if d > m.step_max:
                        m.step_max = d
                    if d > m.slow:
                        m.long_step(self, t0, d)
                tp = type(cb)
                if tp is step_type or tp is wakeup_type:
                    task = cb.__self__
                    tt = type(task)
                    if tt is cls or tt is eager_cls or (tt is _Task and ours(task)):
                        # step_done, inlined: a Python call per step is measurable
                        n = task._ls_steps
                        task._ls_last = t1
                        if n == 0:  # see step_done
                            task._ls_first = t0 - task._ls_created
                            task._ls_steps = 1
                            task._ls_busy = d
                            task._ls_longest = d
                        else:
                            task._ls_steps = n + 1
                            task._ls_busy += d
                            if d > task._ls_longest:
                                task._ls_longest = d
                        state = task._state
                        if state != _PENDING:
                            if state == _FINISHED and task._ls_cancel is None and task._exception is None:
                                # note_end's clean finish, inlined; an eager
                                # task's __del__ must not record it again
                                if tt is not cls:  # eager, or exact
                                    task._ls_ended = True
                                m.done += 1
                                if budget[0] > 0 or hooks.unregister:
                                    clean_end(task, t1)
                            else:
                                step_end(m, task, t1)
            except Exception as e:  # noqa: BLE001 - Ctrl-C still goes through
                note_error(e)
            self = None  # noqa: F841 - asyncio does this to break cycles

        return _run

    def _step_in_context(task: Any, cb: Any, args: tuple) -> None:
        """Runs inside the task's context: enter, the step, leave."""
        if hooks.enter:
            hooks.call_enter(task)
        try:
            cb(*args)
        finally:
            if hooks.leave:
                hooks.call_leave(task)

    def _run_hooked(self: Any) -> None:
        try:
            m = self._loop._loopscope_metrics
        except AttributeError:
            return original(self)
        cb = self._callback
        tp = type(cb)
        task = None
        if tp is step_type or tp is wakeup_type:
            task = cb.__self__
            if not ours(task):
                task = None
        t0 = clock()
        try:
            if task is None:
                self._context.run(cb, *self._args)
            else:
                self._context.run(_step_in_context, task, cb, self._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            _report(self, exc)
        t1 = clock()
        try:
            d = t1 - t0
            m.busy += d
            if m.nested:
                d = max(0.0, d - m.nested)
                m.nested = 0.0
            m.add_step(self, t0, d)
            if task is not None:
                step_done(m, task, type(task), t0, t1, d)
        except Exception as e:  # noqa: BLE001
            note_error(e)
        self = None  # noqa: F841

    return _run_hooked
