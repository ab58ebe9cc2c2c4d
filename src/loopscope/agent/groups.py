"""Task groups and async generators.

Patched (by ``GroupTracker.install``, undone by ``uninstall``):

* ``asyncio.TaskGroup.__init__``: the group, its creation site and the task
  that created it go into a weak registry.
* ``asyncio.TaskGroup._on_task_done`` (a done callback, synchronous): the
  finished child is remembered (id, name, outcome, when) in a short ring in
  the group's ``__dict__`` so a group lists finished children too.
* anyio's asyncio-backend ``TaskGroup.__init__`` (when anyio is imported).
* ``BaseEventLoop._asyncgen_firstiter_hook``: the loop's own hook runs first
  (it keeps the loop's ``_asyncgens`` WeakSet that ``shutdown_asyncgens``
  finalizes), then the generator's first-iteration site, time and task are
  recorded in a WeakKeyDictionary.  Generators are listed from the loop's
  own WeakSet, so ones first iterated before the agent still show (without
  a site).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
import weakref
from asyncio import base_events, taskgroups
from typing import Any

from .tracker import _is_skipped, _skip_cache

_monotonic = time.monotonic
_getframe = sys._getframe
try:
    from _asyncio import current_task as _current_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _current_task = asyncio.current_task

FINISHED_KEPT = 32  # finished children remembered per group


def _user_frame(f: Any) -> Any:
    skip_get = _skip_cache.get
    while f is not None:
        fn = f.f_code.co_filename
        s = skip_get(fn)
        if s is None:
            s = _is_skipped(fn)
        if not s and "/anyio/" not in fn:
            return f
        f = f.f_back
    return None


def _running_task() -> Any:
    try:
        return _current_task()
    except RuntimeError:
        return None


class GroupTracker:
    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        # group -> (kind, code, lasti, created_mono, creator ref)
        self.groups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # async generator -> (code, lasti, first_iter_mono, owner ref, owner id)
        self.agens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
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
                gt.note_agen(agen, _getframe(1))
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

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            orig(self, *args, **kwargs)
            try:
                f = _user_frame(_getframe(1))
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
        cls = getattr(module, "TaskGroup", None)
        if isinstance(cls, type) and "__init__" in cls.__dict__ and not any(p[0] is cls for p in self._patches):
            self._wrap_group_init(cls, "anyio.TaskGroup")

    def note_child_done(self, group: Any, task: Any) -> None:
        d = group.__dict__
        ring = d.get("_ls_finished")
        if ring is None:
            ring = d["_ls_finished"] = collections.deque(maxlen=FINISHED_KEPT)
            d["_ls_finished_count"] = 0
        if task.cancelled():
            state = "cancelled"
        elif task.exception() is not None:  # _on_task_done retrieves it too
            state = "failed"
        else:
            state = "done"
        ring.append((id(task), task.get_name(), state, _monotonic()))
        d["_ls_finished_count"] = d.get("_ls_finished_count", 0) + 1

    def note_agen(self, agen: Any, frame: Any) -> None:
        f = _user_frame(frame)
        t = _running_task()
        self.agens[agen] = (
            f.f_code if f is not None else None,
            f.f_lasti if f is not None else 0,
            _monotonic(),
            weakref.ref(t) if t is not None else None,
            id(t) if t is not None else None,
        )

    # -- reading (server thread) --------------------------------------------------

    def live_groups(self) -> list[tuple[Any, tuple]]:
        return _live(self.groups)

    def agen_record(self, agen: Any) -> tuple | None:
        try:
            return self.agens.get(agen)
        except TypeError:
            return None


def _live(wkd: weakref.WeakKeyDictionary) -> list[tuple[Any, tuple]]:
    for _ in range(5):
        try:
            items = list(wkd.data.items())
            break
        except RuntimeError:
            continue
    else:
        return []
    out = []
    for ref, rec in items:
        obj = ref()
        if obj is not None:
            out.append((obj, rec))
    return out


def group_state(g: Any) -> str:
    if hasattr(g, "_entered"):  # asyncio.TaskGroup
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
    # anyio
    scope = getattr(g, "cancel_scope", None)
    active = getattr(g, "_active", None)
    if active is False:
        return "closed" if getattr(g, "_tasks", None) is not None and getattr(scope, "_host_task", None) is None else "new"
    if scope is not None and getattr(scope, "_cancel_called", False):
        return "shutting down (cancelled)"
    return "open"


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


def loop_asyncgens(loop: Any) -> list[Any]:
    ws = getattr(loop, "_asyncgens", None)
    if ws is None:
        return []
    for _ in range(5):
        try:
            refs = list(ws.data)
            break
        except RuntimeError:
            continue
    else:
        return []
    return [a for a in (r() for r in refs) if a is not None]
