"""A loop's unfinished tasks, read from the server thread without pausing
the loop (3.14+).

On 3.11-3.13 ``asyncio.all_tasks`` iterates a ``WeakSet`` in Python, so the
GIL changes hands while a query reads 100,000 tasks.  On 3.14 it is one C
call that walks every task and builds a set with the GIL held: 9-14 ms per
100,000 tasks here, nearly all of the 20 ms a query may pause the loop
(issue 2), before the query has done anything.

So on 3.14+ the compiled part keeps a table of every task of loopscope's
classes (``_speedups.c``, "The task registry": a pointer per task, added at
creation, removed by the task's finaliser).  A query copies it in one C call
of 1-3 ms and keeps the tasks of its loop that are not done, in C passes
over slices between which the GIL changes hands.

Tasks that are not loopscope's (made before the agent attached, by calling
``asyncio.Task(...)`` directly, or by a program's own task factory) are not
in that table.  ``all_tasks`` finds them: it is still used while it is cheap
(fewer than ``FULL_SCAN_BELOW`` listed tasks), when the agent adopts a loop,
and at scale at most once per ``RECONCILE_S`` per loop; each read notes the
outsiders it saw in a weak registry that later queries read too.  A task
made outside the factory while a loop holds more than ``FULL_SCAN_BELOW``
tasks may therefore appear up to ``RECONCILE_S`` late; docs/architecture.md
says so.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Collection, Iterable
from typing import Any

from .weakreg import WeakRegistry

#: The C ``done``, unbound: every listed task is a C task's subclass.
_task_done = asyncio.Task.done
#: Tasks per C pass (see _of_loop).
CHUNK = 4096

#: Below this many listed tasks ``all_tasks`` costs little (~1.3 ms per
#: 10,000 here) and is exact: it is used.
FULL_SCAN_BELOW = 10_000
#: At scale, how often at most a query still reads ``all_tasks`` to find
#: tasks made outside loopscope's factory.
RECONCILE_S = 60.0
#: Where ``all_tasks`` is one C call.
WANTED = sys.version_info >= (3, 14)

_monotonic = time.monotonic


class TaskIndex:
    """The registry's Python side: enabling it, and reading a loop's tasks."""

    def __init__(self) -> None:
        self._speedups: Any = None
        #: Every class whose tasks the registry lists, across reinstalls.
        self.ours: tuple[type, ...] = ()
        #: Tasks ``all_tasks`` showed that are not of ``ours``.
        self.outsiders = WeakRegistry()
        #: id(loop) -> when ``all_tasks(loop)`` was last read.
        self.reconciled: dict[int, float] = {}
        #: ``_speedups.exact_has``: exact tasks with a record are listed too.
        self._exact_has: Any = None

    def enable(self, speedups: Any, base: type, classes: tuple[type, ...], del_classes: tuple[type, ...]) -> bool:
        """List tasks of ``classes`` (whose finaliser becomes the registry's)
        and of ``del_classes`` (whose ``__del__`` calls ``registry_discard``
        first).  False where it cannot be done safely: then every read is
        ``all_tasks``, as before."""
        if speedups is None or not hasattr(speedups, "registry_enable"):
            self._speedups = None
            return False
        try:
            ok = bool(speedups.registry_enable(base, classes, del_classes))
        except (TypeError, ValueError, MemoryError):
            ok = False
        if not ok:
            # this install's tasks would not be listed: read all_tasks
            self._speedups = None
            return False
        # Before 3.14 queries read all_tasks (cheap there): the table only
        # keeps exact tasks' records (tracker.Tracker.enable_exact).
        self._speedups = speedups if WANTED else None
        self._exact_has = getattr(speedups, "exact_has", None)
        self.ours = tuple(dict.fromkeys(self.ours + classes + del_classes))
        return True

    def disable(self) -> None:
        """This install does not list its tasks: every read is ``all_tasks``."""
        self._speedups = None

    @property
    def active(self) -> bool:
        return self._speedups is not None

    def state(self) -> tuple[int, int, int, int]:
        """(on, listed, lost, table bits), for tests and ``stats``."""
        sp = self._speedups
        return (0, 0, 0, 0) if sp is None else sp.registry_state()  # type: ignore[no-any-return]

    def tasks(self, loop: Any) -> list[Any] | None:
        """``loop``'s unfinished tasks from the registry, or None where
        ``all_tasks`` must be read instead (see the module's docstring)."""
        sp = self._speedups
        if sp is None or not hasattr(sp, "registry_select"):
            return None
        _on, listed, lost, _bits = sp.registry_state()
        if lost or listed < FULL_SCAN_BELOW:
            return None
        last = self.reconciled.get(id(loop))
        if last is None or _monotonic() - last > RECONCILE_S:
            return None
        out = _of_loop(sp.registry_tasks(), loop, sp.registry_select)
        out += _of_loop_slowly([t for t, _ in self.outsiders.live()], loop)
        return out

    def saw_all(self, loop: Any, tasks: Collection[Any]) -> None:
        """``all_tasks(loop)`` was just read: keep its outsiders, and when."""
        if self._speedups is None:
            return
        if len(tasks) >= FULL_SCAN_BELOW and threading.get_ident() != self._thread_of(loop):
            # all_tasks held the GIL for ~10 ms: let the loop run before
            # this thread goes on (a waiting thread only gets the GIL after
            # the switch interval, 5 ms, which would add to the pause)
            time.sleep(0.0005)
        ours = self.ours
        outsiders = self.outsiders
        listed = self._exact_has or _never
        for t in tasks:
            if not isinstance(t, ours) and not listed(t) and t not in outsiders:
                outsiders[t] = None
        self.reconciled[id(loop)] = _monotonic()

    @staticmethod
    def _thread_of(loop: Any) -> int | None:
        thread = getattr(loop, "_thread_id", None)  # a running BaseEventLoop's
        return thread if isinstance(thread, int) else None

    def note_outsider(self, task: Any) -> None:
        """A task a program's own factory made (tracker.make_factory)."""
        if self._speedups is not None:
            self.outsiders[task] = None

    def forget(self, loop_id: int) -> None:
        self.reconciled.pop(loop_id, None)


def _never(_task: Any) -> bool:
    return False


def _of_loop(tasks: list[Any], loop: Any, select: Any) -> list[Any]:
    """The tasks of ``loop`` that are not done: ``registry_select`` over
    slices of ``CHUNK`` tasks (~0.7 ms each), so that the loop may take the
    GIL between two, rather than one call over all of them or a Python line
    per task (three times the CPU of ``all_tasks``)."""
    out: list[Any] = []
    for i in range(0, len(tasks), CHUNK):
        out += select(tasks, i, i + CHUNK, loop, _task_done)
    return out


def _of_loop_slowly(tasks: Iterable[Any], loop: Any) -> list[Any]:
    out = []
    for t in tasks:
        try:
            if t.get_loop() is loop and not t.done():
                out.append(t)
        except Exception:  # noqa: BLE001
            continue
    return out


#: The one index: the registry it reads is the process's.
INDEX = TaskIndex()
