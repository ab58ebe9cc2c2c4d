"""The hooks API: task_register, task_enter, task_leave, task_unregister.

Modelled on trio's ``Instrument``: an instrument is any object with some of
the four methods; only the methods it has are called.  ``add`` also takes
plain callables by keyword.

* ``task_register(task)``: a task was created (from the task factory, on the
  creating thread, before the task's first step; for eager tasks after
  their first step, which runs inside the constructor).
* ``task_enter(task)`` / ``task_leave(task)``: around each step of the task,
  on the loop's thread, **inside the task's own contextvars context**, so an
  instrument can read the task's active span from a ContextVar.
* ``task_unregister(task)``: the task is done (or, on loops where steps are
  not observable, was released).

Costs: an event with no callback costs one truthiness test (register,
unregister); ``task_enter``/``task_leave`` switch the step hook to a slower
variant only while at least one of them is installed.

A callback that raises is removed (the whole instrument with it), the error
is logged once on the ``loopscope`` logger, and the program never sees it.
Hooks must not cancel, await, block, or create tasks: they run between two
steps of the program's own code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

EVENTS = ("task_register", "task_enter", "task_leave", "task_unregister")
log = logging.getLogger("loopscope")


class _Keyword:
    """An instrument made of keyword callables."""

    def __init__(self, **callbacks: Callable[[Any], Any]) -> None:
        for name, fn in callbacks.items():
            if name not in EVENTS:
                raise TypeError(f"unknown hook {name!r}; expected one of {', '.join(EVENTS)}")
            if not callable(fn):
                raise TypeError(f"hook {name!r} is not callable")
            setattr(self, name, fn)

    def __repr__(self) -> str:
        return f"<hooks {', '.join(n for n in EVENTS if n in self.__dict__)}>"


class Hooks:
    """The process-wide set of instruments.

    ``register``/``enter``/``leave``/``unregister`` are tuples of bound
    callables, rebuilt on every change, so the hot paths iterate a tuple
    without locking and see either the old or the new set.  They are slots:
    the compiled parts read ``register`` and ``unregister`` at their offsets
    for every task.
    """

    __slots__ = ("_lock", "instruments", "register", "enter", "leave", "unregister", "on_change")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.instruments: list[Any] = []
        self.register: tuple = ()
        self.enter: tuple = ()
        self.leave: tuple = ()
        self.unregister: tuple = ()
        self.on_change: list[Callable[[], None]] = []

    def add(self, instrument: Any = None, **callbacks: Callable[[Any], Any]) -> Any:
        """Install an instrument (or keyword callables); returns what to pass
        to ``remove``."""
        if instrument is None:
            if not callbacks:
                raise TypeError("add() needs an instrument or keyword callbacks")
            instrument = _Keyword(**callbacks)
        elif callbacks:
            raise TypeError("pass an instrument or keyword callbacks, not both")
        if not any(callable(getattr(instrument, n, None)) for n in EVENTS):
            raise TypeError(f"{instrument!r} has none of the hook methods {', '.join(EVENTS)}")
        with self._lock:
            if instrument not in self.instruments:
                self.instruments.append(instrument)
            self._rebuild()
        return instrument

    def remove(self, instrument: Any) -> None:
        with self._lock:
            if instrument in self.instruments:
                self.instruments.remove(instrument)
            self._rebuild()

    def clear(self) -> None:
        with self._lock:
            self.instruments.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        def bound(name: str) -> tuple:
            return tuple((i, getattr(i, name)) for i in self.instruments if callable(getattr(i, name, None)))

        self.register = bound("task_register")
        self.enter = bound("task_enter")
        self.leave = bound("task_leave")
        self.unregister = bound("task_unregister")
        for fn in list(self.on_change):
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("loopscope: hook change listener failed")

    def _failed(self, instrument: Any, event: str, exc: BaseException) -> None:
        log.error("loopscope: hook %s of %r raised %s: %s; the instrument is removed", event, instrument, type(exc).__name__, exc)
        self.remove(instrument)

    def call_register(self, task: Any) -> None:
        for inst, fn in self.register:
            try:
                fn(task)
            except BaseException as e:  # noqa: BLE001 - never into the host
                self._failed(inst, "task_register", e)

    def call_enter(self, task: Any) -> None:
        for inst, fn in self.enter:
            try:
                fn(task)
            except BaseException as e:  # noqa: BLE001
                self._failed(inst, "task_enter", e)

    def call_leave(self, task: Any) -> None:
        for inst, fn in self.leave:
            try:
                fn(task)
            except BaseException as e:  # noqa: BLE001
                self._failed(inst, "task_leave", e)

    def call_unregister(self, task: Any) -> None:
        for inst, fn in self.unregister:
            try:
                fn(task)
            except BaseException as e:  # noqa: BLE001
                self._failed(inst, "task_unregister", e)


#: The hooks of this process (the agent is a process-wide singleton).
HOOKS = Hooks()
