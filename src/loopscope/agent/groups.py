"""Task groups and async generators.

Patched (by ``GroupTracker.install``, undone by ``uninstall``):

* ``asyncio.TaskGroup.__init__``: the group, its creation site and the task
  that created it go into a weak registry.
* ``asyncio.TaskGroup._on_task_done`` (a done callback, synchronous): the
  finished child is remembered (id, name, outcome, when) in a short ring in
  the group's ``__dict__`` so a group lists finished children too.
* anyio's asyncio-backend ``TaskGroup.__init__`` (through the import hook,
  when anyio first uses its asyncio backend): registered the same way, at
  the user's line (anyio's ``create_task_group`` plumbing is passed over).
  Its finished children are caught where anyio's own per-child done
  callback takes the child out of the group's ``_tasks`` set: that set is
  made a ``_ChildSet`` when the group is made, whose ``remove`` also fills
  the ring.  No callback is added to any task.
* ``BaseEventLoop._asyncgen_firstiter_hook``: the loop's own hook runs first
  (it keeps the loop's ``_asyncgens`` WeakSet that ``shutdown_asyncgens``
  finalizes), then the generator's first-iteration site, time and task are
  recorded in a weak registry (weakreg.py).  Generators are listed from the loop's
  own WeakSet, so ones first iterated before the agent still show (without
  a site).
* Other loops (uvloop) install their own hook, a method of the loop, with
  ``sys.set_asyncgen_hooks`` when they start running, and keep their set
  where Python cannot read it.  ``watch_agens`` runs on the loop thread
  when the loop starts running (after the loop set its hooks: uvloop's
  ``run_forever`` sets them, then marks the loop running) and puts a
  ``firstiter`` in front that calls the loop's own, then records.  The
  finalizer stays the loop's, and the loop puts its predecessor's hooks
  back when it stops, ours included.  Those generators are listed from
  the agent's registry.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
import typing
import weakref
from asyncio import base_events, taskgroups
from typing import Any

from . import primitives
from .tracker import _is_skipped, _skip_cache, skip_for_task_sites
from .weakreg import WeakRegistry

_monotonic = time.monotonic
_getframe = sys._getframe
_TYPING_FILE = typing.__file__
try:
    from _asyncio import current_task as _current_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _current_task = asyncio.current_task

FINISHED_KEPT = 32  # finished children remembered per group


def _user_frame(f: Any, plumbing_only: bool = False) -> Any:
    """The first frame outside loopscope and asyncio (and typing's
    ``__call__`` of a subscripted generic), past the frames of the
    libraries the agent patched (janus, anyio); with ``plumbing_only``,
    past anyio's constructor plumbing only: a group anyio makes for itself
    is created at anyio's line."""
    skip_get = _skip_cache.get
    while f is not None:
        fn = f.f_code.co_filename
        s = skip_get(fn)
        if s is None:
            s = _is_skipped(fn)
        if not s and fn != _TYPING_FILE:
            lib = primitives.LIBRARY_DIRS
            if not lib or not fn.startswith(lib):
                return f
            if plumbing_only and (not fn.startswith(primitives.ANYIO_DIRS) or primitives.anyio_verdict(f) != primitives.PLUMBING):
                return f
        f = f.f_back
    return None


def _running_task() -> Any:
    try:
        return _current_task()
    except RuntimeError:
        return None


def _outcome(task: Any) -> str:
    """done / failed / cancelled, without ``exception()`` (which would mark
    a failure retrieved)."""
    if task.cancelled():
        return "cancelled"
    return "failed" if getattr(task, "_exception", None) is not None else "done"


class _ChildSet(set):  # type: ignore[type-arg]
    """anyio's ``TaskGroup._tasks``.  anyio adds each child and removes it
    in its own done callback, once per child: ``remove`` also remembers the
    child as finished.  Everything else is the C set's."""

    __slots__ = ("finished", "ended")

    def __init__(self) -> None:
        super().__init__()
        self.finished: collections.deque | None = None
        self.ended = 0

    def remove(self, task: Any) -> None:
        set.remove(self, task)
        try:
            ring = self.finished
            if ring is None:
                ring = self.finished = collections.deque(maxlen=FINISHED_KEPT)
            ring.append((id(task), task.get_name(), _outcome(task), _monotonic()))
            self.ended += 1
        except Exception as e:  # noqa: BLE001
            primitives._failed(e)


class GroupTracker:
    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        # group -> (kind, code, lasti, created_mono, creator ref)
        self.groups = WeakRegistry()
        # async generator -> (code, lasti, first_iter_mono, owner ref, owner id)
        self.agens = WeakRegistry()
        self._patches: list[tuple[Any, str, Any]] = []
        self.installed = False

    def _set(self, cls: type, name: str, value: Any) -> None:
        self._patches.append((cls, name, cls.__dict__.get(name)))
        setattr(cls, name, value)

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        self._wrap_group_init(taskgroups.TaskGroup, "asyncio.TaskGroup")
        gt = self
        orig_done = taskgroups.TaskGroup._on_task_done

        def _on_task_done(group: Any, task: Any) -> None:
            try:
                gt.note_child_done(group, task)
            except Exception as e:  # noqa: BLE001
                gt.tracker.note_error(e)
            orig_done(group, task)

        _on_task_done.__wrapped__ = orig_done  # type: ignore[attr-defined]
        self._set(taskgroups.TaskGroup, "_on_task_done", _on_task_done)

        orig_hook = base_events.BaseEventLoop._asyncgen_firstiter_hook

        def _asyncgen_firstiter_hook(loop: Any, agen: Any) -> None:
            orig_hook(loop, agen)
            try:
                gt.note_agen(agen, _getframe(1), loop)
            except Exception as e:  # noqa: BLE001
                gt.tracker.note_error(e)

        _asyncgen_firstiter_hook.__wrapped__ = orig_hook  # type: ignore[attr-defined]
        self._set(base_events.BaseEventLoop, "_asyncgen_firstiter_hook", _asyncgen_firstiter_hook)

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._patches):
            if original is None:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, original)
        self._patches.clear()
        self.installed = False

    def _wrap_group_init(self, cls: type, kind: str) -> None:
        orig = cls.__dict__["__init__"]
        gt = self

        anyio = kind.startswith("anyio.")

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            orig(self, *args, **kwargs)
            try:
                if anyio and type(getattr(self, "_tasks", None)) is set and not self._tasks:
                    self._tasks = _ChildSet()
                f = _user_frame(_getframe(1), plumbing_only=True)
                t = _running_task()
                gt.groups[self] = (
                    kind,
                    f.f_code if f is not None else None,
                    f.f_lasti if f is not None else 0,
                    _monotonic(),
                    weakref.ref(t) if t is not None else None,
                )
            except Exception as e:  # noqa: BLE001
                gt.tracker.note_error(e)

        __init__.__wrapped__ = orig  # type: ignore[attr-defined]
        __init__.__qualname__ = orig.__qualname__
        self._set(cls, "__init__", __init__)

    def patch_anyio(self, module: Any) -> None:
        """anyio's asyncio-backend TaskGroup (``anyio._backends._asyncio``)."""
        try:
            primitives.add_library_dir(primitives.package_dir(module), anyio=True)
            skip_for_task_sites(primitives.package_dir(module))
            cls = getattr(module, "TaskGroup", None)
            if isinstance(cls, type) and "__init__" in cls.__dict__ and not any(p[0] is cls for p in self._patches):
                self._wrap_group_init(cls, "anyio.TaskGroup")
        except Exception as e:  # noqa: BLE001
            self.tracker.note_error(e)

    def note_child_done(self, group: Any, task: Any) -> None:
        d = group.__dict__
        ring = d.get("_ls_finished")
        if ring is None:
            ring = d["_ls_finished"] = collections.deque(maxlen=FINISHED_KEPT)
            d["_ls_finished_count"] = 0
        ring.append((id(task), task.get_name(), _outcome(task), _monotonic()))
        d["_ls_finished_count"] = d.get("_ls_finished_count", 0) + 1

    def note_agen(self, agen: Any, frame: Any, loop: Any) -> None:
        f = _user_frame(frame)
        t = _running_task()
        try:
            loop_ref: Any = weakref.ref(loop)
        except TypeError:
            loop_ref = None
        self.agens[agen] = (
            f.f_code if f is not None else None,
            f.f_lasti if f is not None else 0,
            _monotonic(),
            weakref.ref(t) if t is not None else None,
            id(t) if t is not None else None,
            loop_ref,
        )

    def watch_agens(self, loop: Any) -> None:
        """On the loop thread, as ``loop`` starts running: if the thread's
        ``firstiter`` hook is the loop's own method (uvloop's), put ours in
        front of it.  A BaseEventLoop's is patched on the class already; a
        hook the program installed itself is left alone."""
        if isinstance(loop, base_events.BaseEventLoop) or not self.installed:
            return
        first = sys.get_asyncgen_hooks().firstiter
        if first is None or getattr(first, "__self__", None) is not loop:
            return
        gt = self

        def firstiter(agen: Any) -> None:
            first(agen)
            if gt.installed:
                try:
                    gt.note_agen(agen, _getframe(1), loop)
                except Exception as e:  # noqa: BLE001
                    gt.tracker.note_error(e)

        sys.set_asyncgen_hooks(firstiter=firstiter)

    # -- reading (server thread) --------------------------------------------------

    def live_groups(self) -> list[tuple[Any, tuple]]:
        return self.groups.live()

    def agen_record(self, agen: Any) -> tuple | None:
        return self.agens.get(agen)  # type: ignore[no-any-return]

    def agens_of(self, loop: Any) -> list[Any]:
        """The live generators first iterated on ``loop``, from the agent's
        own registry (for loops whose generator set cannot be read)."""
        return [agen for agen, rec in self.agens.live() if rec[5] is not None and rec[5]() is loop]


def group_state(g: Any) -> str:
    if isinstance(g, taskgroups.TaskGroup):
        aborting = getattr(g, "_aborting", False)
        if not g._entered:
            return "new"
        if not g._exiting:
            return "open, shutting down after an error" if aborting else "open"
        if aborting:
            return "shutting down after an error"
        if g._tasks or g._on_completed_fut is not None:
            return "closing (waiting for children)"
        return "closed"
    return _anyio_state(g)


def _anyio_state(g: Any) -> str:
    """anyio 4: ``_entered`` once in ``async with``; the group's cancel
    scope is active until it exits; ``_exceptions`` holds the children's
    failures (and is deleted on exit); ``_on_completed_fut`` is set while
    the host waits for its children in ``__aexit__``."""
    scope = getattr(g, "cancel_scope", None)
    entered = getattr(g, "_entered", None)
    if entered is None:  # anyio 3: _active inside async with
        if getattr(g, "_active", None) is False:
            return "closed" if getattr(g, "_tasks", None) is not None and getattr(scope, "_host_task", None) is None else "new"
        return "shutting down (cancelled)" if getattr(scope, "_cancel_called", False) else "open"
    if not entered:
        return "new"
    if not getattr(scope, "_active", False):
        return "closed"
    waiting = getattr(g, "_on_completed_fut", None) is not None
    if getattr(g, "_exceptions", None):
        return "shutting down after an error" if waiting else "open, shutting down after an error"
    if getattr(scope, "_cancel_called", False):
        return "shutting down (cancelled)"
    return "closing (waiting for children)" if waiting else "open"


def group_finished(g: Any) -> tuple[list[tuple], int]:
    """The finished children a group remembers (id, name, outcome, ended)
    and how many ended in all: asyncio's in the group's ``__dict__``,
    anyio's in its ``_ChildSet``."""
    tasks = getattr(g, "_tasks", None)
    if isinstance(tasks, _ChildSet):
        return list(tasks.finished or ()), tasks.ended
    d = getattr(g, "__dict__", {})
    return list(d.get("_ls_finished") or ()), d.get("_ls_finished_count", 0)


def group_parent(g: Any, rec: tuple) -> Any:
    t = getattr(g, "_parent_task", None)
    if t is None:
        scope = getattr(g, "cancel_scope", None)
        t = getattr(scope, "_host_task", None)
    if t is None and rec[4] is not None:
        t = rec[4]()
    return t


def group_children(g: Any) -> list[Any]:
    tasks = getattr(g, "_tasks", None) or ()
    try:
        return list(tasks)
    except RuntimeError:
        return []


def loop_asyncgens(loop: Any) -> list[Any] | None:
    """The loop's own set of live generators (BaseEventLoop's WeakSet), or
    None when the loop keeps none Python can read (uvloop's)."""
    ws = getattr(loop, "_asyncgens", None)
    if ws is None:
        return None
    for _ in range(5):
        try:
            refs = list(ws.data)
            break
        except RuntimeError:
            continue
    else:
        return []
    return [a for a in (r() for r in refs) if a is not None]
