"""Synchronization primitives: who holds them, who waits, since when.

What is patched (``PrimitiveTracker.install``, undone by ``uninstall``), all
on asyncio's own classes so ``isinstance`` and user subclasses keep working:

* ``__init__`` of Lock, Semaphore, Event, Condition, Queue and Barrier
  (BoundedSemaphore, PriorityQueue, LifoQueue inherit it): the object and its
  creation site go into a weak registry.  Objects asyncio makes for itself
  (a Condition's Lock, a Queue's Event, a Barrier's Condition) are not
  listed on their own: they are shown through their owner.
* ``Lock._locked`` and ``Semaphore._value`` become *set-only* descriptors
  (a ``__set__`` and no ``__get__``): reads still come straight from the
  instance ``__dict__`` at C speed, and the assignments asyncio already makes
  when a lock or a permit changes hands call us, synchronously, inside
  ``acquire``/``release``: no extra coroutine frame ever appears in a user's
  stack.  ``acquire``'s fast path sets ``_locked = True`` in the acquiring
  task; after a wakeup, Lock sets it in the woken task, and Semaphore
  decrements in ``_wake_up_next`` on behalf of the waiter whose future it is
  about to resolve, so the holder is the task awaiting that future.
* Nothing is patched for waiters: a task blocked on a primitive has been
  waiting since the end of its last step, which the step hook records in the
  task (``_ls_last``).  An earlier version stamped each append to the waiter
  deques, a Python call on every wait that cost 20 % on queue ping-pong.

Holders are kept as ``(weakref to the task, since)`` in the primitive's own
``__dict__`` (``_ls_holder`` / ``_ls_holders``): nothing keeps a task alive.
Objects that existed before the agent are found from the tasks waiting on
them (``found_from_waiters``); their holder is known only if it acquired
after the agent was installed.
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from asyncio import locks, queues
from typing import Any

from .tracker import _SKIP_DIRS, _is_skipped, _skip_cache

_monotonic = time.monotonic
_getframe = sys._getframe
_ref = weakref.ref
_Task = asyncio.Task
try:
    from _asyncio import current_task as _current_task  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _current_task = asyncio.current_task

MAX_HOLDERS = 64  # per semaphore; beyond this only the count is right
ASYNCIO_DIR = _SKIP_DIRS[0]

# kind shown to users, by class (subclasses map through their MRO)
KINDS: list[tuple[type, str]] = [
    (locks.BoundedSemaphore, "BoundedSemaphore"),
    (locks.Semaphore, "Semaphore"),
    (locks.Lock, "Lock"),
    (locks.Condition, "Condition"),
    (locks.Event, "Event"),
    (locks.Barrier, "Barrier"),
    (queues.PriorityQueue, "PriorityQueue"),
    (queues.LifoQueue, "LifoQueue"),
    (queues.Queue, "Queue"),
]


def kind_of(obj: Any) -> str | None:
    for cls, kind in KINDS:
        if isinstance(obj, cls):
            return kind
    mod = type(obj).__module__ or ""
    if mod.startswith("janus") and type(obj).__name__ in ("Queue", "PriorityQueue", "LifoQueue"):
        return "janus." + type(obj).__name__
    return None


class _LockedSlot:
    """``Lock._locked``: records the acquiring task when set to True."""

    __slots__ = ("pt",)

    def __init__(self, pt: PrimitiveTracker) -> None:
        self.pt = pt

    def __set__(self, obj: Any, value: Any, _cur: Any = _current_task, _mono: Any = _monotonic) -> None:
        d = obj.__dict__
        d["_locked"] = value
        if value:
            try:
                t = _cur()
                d["_ls_holder"] = (_ref(t), _mono(), id(t))
            except Exception as e:  # noqa: BLE001 - outside a task, or odd loop
                d["_ls_holder"] = None
                if not isinstance(e, RuntimeError):
                    self.pt.note_error(e)
        else:
            d["_ls_holder"] = None


def _task_of_future(fut: Any) -> Any:
    """The task whose wakeup is among ``fut``'s done callbacks."""
    for entry in fut._callbacks or ():
        cb = entry[0] if isinstance(entry, tuple) else entry
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, _Task):
            return owner
    return None


class _ValueSlot:
    """``Semaphore._value``: a decrement is an acquisition, an increment a
    release.  ``_wake_up_next`` decrements for the waiter it wakes."""

    __slots__ = ("pt", "wake_code")

    def __init__(self, pt: PrimitiveTracker) -> None:
        self.pt = pt
        self.wake_code = locks.Semaphore._wake_up_next.__code__

    def __set__(self, obj: Any, value: Any, _cur: Any = _current_task, _mono: Any = _monotonic) -> None:
        d = obj.__dict__
        old = d.get("_value")
        d["_value"] = value
        if old is None or old == value:
            return
        try:
            # holders by task id: a release finds its own entry in O(1)
            holders = d.get("_ls_holders")
            if value < old:
                caller = _getframe(1)
                if caller.f_code is self.wake_code:
                    task = _task_of_future(caller.f_locals["fut"])
                else:
                    task = _cur()
                if task is not None:
                    if holders is None:
                        holders = d["_ls_holders"] = {}
                    if len(holders) < MAX_HOLDERS:
                        holders[id(task)] = (_ref(task), _mono(), id(task))
            elif holders:
                try:
                    me = _cur()
                except RuntimeError:
                    me = None
                if holders.pop(id(me), None) is None:
                    holders.pop(next(iter(holders)))
        except Exception as e:  # noqa: BLE001
            self.pt.note_error(e)


class PrimitiveTracker:
    """Registry of live primitives (weak) plus the patches that feed it."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        # obj -> (kind, code, lasti, created_mono); weak keys: never keeps one alive
        self.objects: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._patches: list[tuple[Any, str, Any]] = []
        self.installed = False
        self._skip_dirs: tuple[str, ...] = ()

    def note_error(self, e: BaseException) -> None:
        self.tracker.note_error(e)

    # -- patches -----------------------------------------------------------------

    def install(self) -> None:
        if self.installed:
            return
        global _active
        self.installed = True
        _active = self
        from . import introspect

        introspect.wait_detail = wait_detail
        for cls in (locks.Lock, locks.Semaphore, locks.Event, locks.Condition, locks.Barrier, queues.Queue):
            self._wrap_init(cls)
        self._set(locks.Lock, "_locked", _LockedSlot(self))
        self._set(locks.Semaphore, "_value", _ValueSlot(self))

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
        global _active
        if _active is self:
            _active = None

    def _set(self, cls: type, name: str, value: Any) -> None:
        self._patches.append((cls, name, cls.__dict__.get(name)))
        setattr(cls, name, value)

    def _wrap_init(self, cls: type) -> None:
        orig = cls.__dict__["__init__"]
        pt = self

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            orig(self, *args, **kwargs)
            try:
                pt.register(self, _getframe(1))
            except Exception as e:  # noqa: BLE001
                pt.note_error(e)

        __init__.__wrapped__ = orig  # type: ignore[attr-defined]
        __init__.__qualname__ = orig.__qualname__
        __init__.__doc__ = orig.__doc__
        self._set(cls, "__init__", __init__)

    def patch_janus(self, module: Any) -> None:
        """janus.Queue: registered as one queue (its asyncio Lock and
        Conditions are its internals, not listed on their own)."""
        cls = getattr(module, "Queue", None)
        if not isinstance(cls, type) or "__init__" not in cls.__dict__ or any(p[0] is cls for p in self._patches):
            return
        self._skip_dirs = (*self._skip_dirs, module.__file__.rsplit("/", 1)[0] + "/")
        self._wrap_init(cls)

    def register(self, obj: Any, frame: Any) -> None:
        """Called from __init__: find the creating user frame and record it.
        Objects whose first non-loopscope creator is asyncio itself (or janus)
        are internals of another primitive: not registered."""
        f = frame
        skip_get = _skip_cache.get
        while f is not None:
            fn = f.f_code.co_filename
            s = skip_get(fn)
            if s is None:
                s = _is_skipped(fn)
            if not s and not (self._skip_dirs and fn.startswith(self._skip_dirs)):
                break
            if fn.startswith(ASYNCIO_DIR) or (self._skip_dirs and fn.startswith(self._skip_dirs)):
                # created by asyncio/janus internals, unless that is a
                # subclass __init__ chain of the object itself
                if f.f_code.co_name != "__init__" or f.f_locals.get("self") is not obj:
                    return
            f = f.f_back
        if obj in self.objects:  # a subclass chain registered it already
            return
        kind = kind_of(obj) or type(obj).__name__
        if f is None:
            self.objects[obj] = (kind, None, 0, _monotonic())
        else:
            self.objects[obj] = (kind, f.f_code, f.f_lasti, _monotonic())

    # -- reading (server thread) -------------------------------------------------

    def live(self) -> list[tuple[Any, tuple]]:
        for _ in range(5):
            try:
                items = list(self.objects.data.items())
                break
            except RuntimeError:  # changed size while copying: try again
                continue
        else:
            return []
        out = []
        for ref, rec in items:
            obj = ref()
            if obj is not None:
                out.append((obj, rec))
        return out


# -- reading one primitive's state (server thread) ------------------------------------


def holders_of(obj: Any) -> tuple[list[tuple[Any, float | None]], bool]:
    """[(task or None if gone, since_mono, id)], and whether the list is known.

    Lock: the recorded holder while locked.  Semaphore: recorded holders.
    Condition: its lock's.  Unknown when the lock was taken before the agent.
    """
    d = getattr(obj, "__dict__", {})
    if isinstance(obj, locks.Lock):
        if not d.get("_locked"):
            return [], True
        h = d.get("_ls_holder")
        if h is None:
            return [], False
        return [(h[0](), h[1], h[2])], True
    if isinstance(obj, locks.Semaphore):
        hs = list((d.get("_ls_holders") or {}).values())
        out = [(r(), s, i) for r, s, i in hs]
        value = d.get("_value", 0)
        bound = d.get("_bound_value")
        known = bound is None or len(out) == bound - value
        return out, known
    if isinstance(obj, locks.Condition):
        return holders_of(obj._lock)
    kind = kind_of(obj) or ""
    if kind.startswith("janus."):
        return holders_of(obj._async_mutex)
    mod = type(obj).__module__ or ""
    if mod.startswith("anyio") and hasattr(obj, "_owner_task"):
        t = obj._owner_task
        return ([(t, None)] if t is not None else []), True
    return [], True


def waiter_deques(obj: Any) -> list[tuple[str, Any]]:
    """(role, deque of futures) for the tasks blocked on ``obj``."""
    if isinstance(obj, queues.Queue):
        return [("get", obj._getters), ("put", obj._putters)]
    if isinstance(obj, locks.Barrier):
        return [("wait", obj._cond._waiters), ("acquire", obj._cond._lock._waiters)]
    if isinstance(obj, locks.Condition):
        return [("wait", obj._waiters), ("acquire", obj._lock._waiters)]
    if isinstance(obj, (locks.Lock, locks.Semaphore)):
        return [("acquire", obj._waiters)]
    if isinstance(obj, locks.Event):
        return [("wait", obj._waiters)]
    kind = kind_of(obj) or ""
    if kind.startswith("janus."):
        return [
            ("get", obj._async_not_empty._waiters),
            ("put", obj._async_not_full._waiters),
            ("acquire", obj._async_mutex._waiters),
        ]
    mod = type(obj).__module__ or ""
    if mod.startswith("anyio") and hasattr(obj, "_waiters"):
        return [("acquire", _AnyioWaiters(obj._waiters))]
    return []


class _AnyioWaiters:
    """anyio's Lock keeps (task, future) pairs; present them as futures."""

    def __init__(self, pairs: Any) -> None:
        self.pairs = list(pairs or ())

    def __iter__(self) -> Any:
        for item in self.pairs:
            yield item[1] if isinstance(item, tuple) else item


def waiters_of(obj: Any) -> list[tuple[str, Any, Any, float | None]]:
    """[(role, task, future, since_mono)] for tasks blocked on ``obj``."""
    out = []
    for role, dq in waiter_deques(obj):
        if not dq:
            continue
        pairs = getattr(dq, "pairs", None)
        for i, fut in enumerate(list(dq)):
            if fut.done():
                continue
            task = pairs[i][0] if pairs and isinstance(pairs[i], tuple) else _task_of_future(fut)
            if task is None:
                continue
            # A waiting task has been waiting since the end of its last step
            # (the step hook keeps it; unknown on loops without the hook).
            out.append((role, task, fut, getattr(task, "_ls_last", None)))
    return out


def state_of(obj: Any) -> dict[str, Any]:
    """kind-specific state: locked / value / set / size."""
    st: dict[str, Any] = {}
    try:
        if isinstance(obj, locks.Lock):
            st["locked"] = obj.locked()
            st["text"] = "locked" if st["locked"] else "unlocked"
        elif isinstance(obj, locks.Semaphore):
            st["value"] = obj._value
            bound = getattr(obj, "_bound_value", None)
            st["text"] = f"value={obj._value}" + (f"/{bound}" if bound is not None else "")
        elif isinstance(obj, locks.Event):
            st["set"] = obj.is_set()
            st["text"] = "set" if st["set"] else "not set"
        elif isinstance(obj, locks.Condition):
            st["locked"] = obj.locked()
            st["text"] = "locked" if st["locked"] else "unlocked"
        elif isinstance(obj, locks.Barrier):
            st["text"] = f"{obj.n_waiting}/{obj.parties} waiting, {obj._state.value}"
        elif isinstance(obj, queues.Queue) or (kind_of(obj) or "").startswith("janus."):
            size = obj.qsize() if hasattr(obj, "qsize") else obj.async_q.qsize()
            maxsize = obj.maxsize if hasattr(obj, "maxsize") else 0
            st["size"], st["maxsize"] = size, maxsize
            st["text"] = f"size {size}/{maxsize or '∞'}"
            unfinished = getattr(obj, "_unfinished_tasks", None)
            if unfinished:
                st["text"] += f", {unfinished} unfinished"
        elif hasattr(obj, "_owner_task"):
            st["locked"] = obj._owner_task is not None
            st["text"] = "locked" if st["locked"] else "unlocked"
    except Exception:  # noqa: BLE001
        st.setdefault("text", "?")
    return st


def primitive_of_frame(frame: Any) -> Any:
    """The primitive a suspended wait frame belongs to (``self``), if any."""
    code = frame.f_code
    owner, _, meth = code.co_qualname.rpartition(".")
    if not owner or meth not in ("acquire", "wait", "wait_for", "get", "put", "_block", "_wait"):
        return None
    try:
        self_obj = frame.f_locals.get("self")
    except Exception:  # noqa: BLE001
        return None
    if self_obj is None:
        return None
    if kind_of(self_obj) is not None:
        return self_obj
    mod = type(self_obj).__module__ or ""
    if mod.startswith("janus") and hasattr(self_obj, "_parent"):
        return self_obj._parent
    if mod.startswith("anyio") and hasattr(self_obj, "_owner_task"):
        return self_obj
    return None


# -- "waiting on Lock (created at app.py:12) held by task 'audit' for 12.4 s" --------------

_active: PrimitiveTracker | None = None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def wait_detail(target: Any, obj: Any) -> None:
    """Rewrite a WaitTarget's description with the creation site and holder
    (used by introspect.waiting_on for ps/inspect)."""
    pt = _active
    if pt is None:
        return
    owner = obj
    try:
        rec = pt.objects.get(owner)
    except TypeError:
        rec = None
    kind = (rec[0] if rec else None) or kind_of(owner) or type(owner).__name__
    if rec is not None and rec[1] is not None:
        from .tracker import code_lineno

        where = f"created at {rec[1].co_filename}:{code_lineno(rec[1], rec[2])}"
    elif rec is not None:
        where = "created outside any user code"
    else:
        where = "created before loopscope"
    first, _, rest = target.description.partition(" ")
    name = kind + ("." + first.split(".", 1)[1] if "." in first else "")
    desc = f"{name} ({where})"
    target.object_id = hex(id(owner))
    if target.kind in ("lock", "semaphore"):
        holders, known = holders_of(owner)
        now = _monotonic()
        if holders:
            parts = []
            for t, since, tid in holders[:3]:
                if t is None:
                    parts.append(f"task {hex(tid)} (gone: finished without releasing it)")
                    continue
                fin = " (finished without releasing it)" if t.done() else ""
                dur = f" for {_fmt_s(now - since)}" if since is not None else ""
                parts.append(f"task {t.get_name()!r}{fin}{dur}")
            if len(holders) > 3:
                parts.append(f"{len(holders) - 3} more")
            desc += " held by " + ", ".join(parts)
            if holders[0][0] is not None:
                target.holder_id = hex(id(holders[0][0]))
        elif not known:
            desc += " held by an unknown task (acquired before loopscope was installed)"
        elif kind_of(owner) in ("Semaphore", "BoundedSemaphore"):
            desc += f" (value={getattr(owner, '_value', '?')})"
    elif rest:
        desc += " " + rest
    target.description = desc
