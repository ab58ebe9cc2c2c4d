"""Synchronization primitives: who holds them, who waits, since when.

What is patched (``PrimitiveTracker.install``, undone by ``uninstall``), all
on asyncio's own classes so ``isinstance`` and user subclasses keep working:

* ``__init__`` of Lock, Semaphore, Event, Condition, Queue and Barrier
  (BoundedSemaphore, PriorityQueue, LifoQueue inherit it): the object and its
  creation site go into a weak registry.  Objects asyncio makes for itself
  (a Condition's Lock, a Queue's Event, a Barrier's Condition) are not
  listed on their own: they are shown through their owner.
* Holders are recorded by asyncio's own ``acquire`` and ``release`` of Lock
  and Semaphore, recompiled from asyncio's source with a few statements
  added: before each ``return True`` of ``acquire`` (every return of it is
  an acquisition, in the acquiring task: the fast path, or the waiter once
  it runs again), after ``self._locked = False`` and ``self._value += 1``
  in ``release``.  Only the functions' ``__code__`` changes: the function
  objects stay, so a Condition's ``acquire``/``release`` (bound to its lock
  when it is made, maybe before the agent), subclasses and ``super()``
  calls all run the new code, and no frame is added to anyone's stack.  The
  new code keeps the original's file, first line, qualified name and line
  table (tracebacks and debuggers show asyncio's lines), because the
  unedited source must first compile back to exactly the running code; if
  it does not (no source, an edited or patched asyncio) the class falls
  back to set-only descriptors on ``_locked``/``_value`` (a Python call
  from C on every assignment, about 3x the cost; ``holders_via`` says
  which is in use).
* Nothing is patched for waiters: a task blocked on a primitive has been
  waiting since the end of its last step, which the step hook records in the
  task (``_ls_last``).  An earlier version stamped each append to the waiter
  deques, a Python call on every wait that cost 20 % on queue ping-pong.

Holders are kept in the primitive's own attributes: a Lock's ``_ls_holder``
is ``(weakref to the task, since, task id)``, a Semaphore's ``_ls_holders``
maps task id to ``(weakref, since)`` (at most ``MAX_HOLDERS``).  Nothing
keeps a task alive (a strong reference would keep a task the program
dropped, and the lock its ``async with`` would release when collected); the
id names a holder that is gone, from the history.  A Semaphore's woken
waiter owns its permit from ``_wake_up_next`` on but records it when it
runs; until then its future is done in ``_waiters`` and ``holders_of``
counts it.  Readers use ``getattr``, never ``obj.__dict__``: reading
``__dict__`` gives an object a real dict for good, after which every
``async with`` on it costs 40 % more on 3.11 (17 % on 3.13).

Objects that existed before the agent are found from the tasks waiting on
them (``found_from_waiters``); their holder is known only if it acquired
after the agent was installed.  After ``uninstall`` the global
``asyncio.locks._loopscope_primitives`` stays: a task suspended inside the
new ``acquire`` still runs its code when it resumes.
"""

from __future__ import annotations

import ast
import asyncio
import linecache
import sys
import time
import weakref
from asyncio import locks, queues
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any

from .tracker import _SKIP_DIRS, _is_skipped, _skip_cache

_monotonic = time.monotonic
_getframe = sys._getframe
_ref = weakref.ref
_Task = asyncio.Task
_running_loop = asyncio.events._get_running_loop  # C, None outside a loop
# The running task, by C calls.  _task_of_loop(loop): 3.11's dict of current
# tasks (None for no loop), 3.12+'s current_task(loop) (RuntimeError for no
# loop).  _this_task(): RuntimeError outside a loop; current_task() itself
# on 3.13+ only, as 3.11 and 3.12 call getpid() (a system call) in it.
try:
    if sys.version_info >= (3, 12):
        from _asyncio import current_task as _task_of_loop  # type: ignore[attr-defined]
    else:
        from _asyncio import _current_tasks  # type: ignore[attr-defined]

        _task_of_loop = _current_tasks.get
except ImportError:  # pragma: no cover - asyncio without its C module
    _task_of_loop = asyncio.current_task

if sys.version_info >= (3, 13):
    _this_task = _task_of_loop
else:

    def _this_task() -> Any:
        loop = _running_loop()
        if loop is None:
            raise RuntimeError("no running event loop")
        return _task_of_loop(loop)


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


_kinds: dict[type, str | None] = {}  # by class: kind_of runs for every primitive made


def kind_of(obj: Any) -> str | None:
    cls = type(obj)
    try:
        return _kinds[cls]
    except KeyError:
        pass
    kind = next((k for c, k in KINDS if issubclass(cls, c)), None)
    mod = cls.__module__ or ""
    if kind is None and mod.startswith("janus") and cls.__name__ in ("Queue", "PriorityQueue", "LifoQueue"):
        kind = "janus." + cls.__name__
    if len(_kinds) < 1000:
        _kinds[cls] = kind
    return kind


# -- holders: statements compiled into asyncio's acquire/release --------------------------
#
# They run in asyncio's own frame, so they reach this module through one
# global added to asyncio.locks (``_loopscope_primitives``), keep their
# temporaries in ``_ls_*`` locals, and are wrapped in try (free in 3.11+
# until something raises).  Whatever raises there (an object made before the
# agent, no running loop, a bug) goes to the matching function below, which
# does the same work carefully and never raises.

_G = "_loopscope_primitives"
if sys.version_info >= (3, 13):
    _CURRENT = f"{_G}._this_task()"
elif sys.version_info >= (3, 12):
    _CURRENT = f"{_G}._task_of_loop({_G}._running_loop())"
else:
    # 3.11's _get_running_loop() calls getpid(): the loop the object is
    # bound to (asyncio binds it at its first wait) is asked first; the
    # running loop when it is unbound, or has no task stepping (an object
    # used from another loop later).  An object shared by loops of two
    # threads at once, which asyncio does not support, could be credited
    # to the other thread's task.
    _CURRENT = f"({_G}._task_of_loop({{self}}._loop or {_G}._running_loop()) or {_G}._task_of_loop({_G}._running_loop()))"

# Lock.acquire, before each ``return True``: (task, since, task id)
LOCK_ACQUIRED = f"""
try:
    _ls_t = {_CURRENT}
    {{self}}._ls_holder = ({_G}._ref(_ls_t), {_G}._monotonic(), id(_ls_t))
except Exception:
    {_G}._lock_acquired({{self}})
"""
# Lock.release, after ``self._locked = False``
LOCK_RELEASED = "{self}._ls_holder = None"
# Semaphore.acquire, before each ``return True``: task id -> (task, since)
SEM_ACQUIRED = f"""
try:
    _ls_h = {{self}}._ls_holders
    if len(_ls_h) < {MAX_HOLDERS}:
        _ls_t = {_CURRENT}
        _ls_h[id(_ls_t)] = ({_G}._ref(_ls_t), {_G}._monotonic())
except Exception:
    {_G}._sem_acquired({{self}})
"""
# Semaphore.release, after ``self._value += 1``: the releasing task's
# entry, or the oldest when another task releases (allowed for semaphores)
SEM_RELEASED = f"""
try:
    _ls_h = {{self}}._ls_holders
    if _ls_h and _ls_h.pop(id({_CURRENT}), None) is None:
        del _ls_h[next(iter(_ls_h))]
except Exception:
    {_G}._sem_released({{self}})
"""


def _failed(e: BaseException) -> None:
    """Count an error of ours; never raise.  No running loop is not one."""
    try:
        if not isinstance(e, RuntimeError) and _active is not None:
            _active.note_error(e)
    except Exception:  # noqa: BLE001
        pass


def _lock_acquired(lock: Any) -> None:
    """LOCK_ACQUIRED, carefully: outside a task the holder is unknown."""
    try:
        t = _task_of_loop(_running_loop())
        lock._ls_holder = None if t is None else (_ref(t), _monotonic(), id(t))
    except Exception as e:  # noqa: BLE001
        try:
            lock._ls_holder = None
        except Exception:  # noqa: BLE001
            pass
        _failed(e)


def _sem_acquired(sem: Any) -> None:
    """SEM_ACQUIRED, carefully: a semaphore made before the agent gets its
    holder table now."""
    try:
        t = _task_of_loop(_running_loop())
        holders = getattr(sem, "_ls_holders", None)
        if holders is None:
            holders = sem._ls_holders = {}
        if t is not None and len(holders) < MAX_HOLDERS:
            holders[id(t)] = (_ref(t), _monotonic())
    except Exception as e:  # noqa: BLE001
        _failed(e)


def _sem_released(sem: Any) -> None:
    """SEM_RELEASED, carefully: released outside any task (or loop), the
    oldest entry goes."""
    try:
        holders = getattr(sem, "_ls_holders", None)
        if holders:
            loop = _running_loop()
            me = None if loop is None else _task_of_loop(loop)
            if holders.pop(id(me), None) is None:
                del holders[next(iter(holders))]
    except Exception as e:  # noqa: BLE001
        _failed(e)


# -- recompiling asyncio's methods with those statements --------------------------------

# Where a template goes, given the name of the method's first parameter: a
# test of each statement of the method, answering "before", "after", None
# (not here) or "refuse" (this method must not be changed at all).
Where = Callable[[str], Callable[[ast.stmt], "str | None"]]


def _method_source(code: CodeType) -> ast.Module | None:
    """A method's source as ``<the module's imports>; class Owner: <method>``,
    with the file's line numbers and columns, so that compiling it gives the
    method's code back exactly (line table included).  The imports come
    along because the compiler calls a method of an imported module
    differently from one of any other global."""
    owner = code.co_qualname.rpartition(".")[0]
    if not owner.isidentifier():
        return None
    lines = linecache.getlines(code.co_filename)
    first = code.co_firstlineno
    last = max((p[1] for p in code.co_positions() if p[1] is not None), default=0)
    if not lines or last < first or last > len(lines):
        return None
    head = next((i for i, ln in enumerate(lines) if ln.startswith(("class ", "def ", "async def ", "@"))), 0)
    prologue = ast.parse("".join(lines[:head]), code.co_filename)
    tree = ast.parse(f"class {owner}:\n" + "".join(lines[first - 1 : last]), code.co_filename)
    ast.increment_lineno(tree, first - 2)
    tree.body[:0] = [n for n in prologue.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return tree


def _compiled(tree: ast.Module, code: CodeType) -> CodeType | None:
    module = compile(tree, code.co_filename, "exec", dont_inherit=True)
    for body in module.co_consts:
        if isinstance(body, CodeType) and body.co_name == code.co_qualname.rpartition(".")[0]:
            for c in body.co_consts:
                if isinstance(c, CodeType) and c.co_name == code.co_name:
                    return c
    return None


def _same(a: CodeType, b: CodeType) -> bool:
    """Whether ``a`` is ``b`` compiled again from the same source."""

    def consts(c: CodeType) -> list[Any]:
        return [k for k in c.co_consts if not isinstance(k, CodeType)]

    return (
        a.co_code == b.co_code
        and a.co_names == b.co_names
        and a.co_varnames == b.co_varnames
        and a.co_freevars == b.co_freevars == ()
        and a.co_cellvars == b.co_cellvars
        and a.co_flags == b.co_flags
        and a.co_firstlineno == b.co_firstlineno
        and a.co_linetable == b.co_linetable
        and consts(a) == consts(b)
    )


def _stmts(template: str, self_name: str, at: ast.stmt) -> list[ast.stmt]:
    """``template`` parsed, every node placed at ``at`` (tracebacks and
    debuggers see the line they are inserted at)."""
    body = ast.parse(template.strip().format(self=self_name)).body
    for node in body:
        for n in ast.walk(node):
            ast.copy_location(n, at)
    return body


def _statement_lists(fn: ast.AST) -> list[list[ast.stmt]]:
    """Every statement list in ``fn``'s body, nested scopes left out."""
    out: list[list[ast.stmt]] = []
    todo: list[Any] = [fn]
    while todo:
        node = todo.pop()
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            sub = getattr(node, field, None)
            if not isinstance(sub, list):
                continue
            if sub and isinstance(sub[0], ast.stmt):
                out.append(sub)
            todo.extend(n for n in sub if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    return out


def _insert(fn: ast.AST, self_name: str, template: str, where: Callable[[ast.stmt], str | None]) -> int:
    """Insert ``template`` where ``where`` says; how many times, or -1 if it
    refuses any statement."""
    spots = [(stmts, i, where(s)) for stmts in _statement_lists(fn) for i, s in enumerate(stmts)]
    if any(w == "refuse" for _, _, w in spots):
        return -1
    found = 0
    for stmts, i, w in reversed(spots):  # from the end: earlier indexes stay valid
        if w in ("before", "after"):
            at = i if w == "before" else i + 1
            stmts[at:at] = _stmts(template, self_name, stmts[i])
            found += 1
    return found


def _at_return_true(s: ast.stmt) -> str | None:
    """Each return of acquire must be ``return True`` (an acquisition)."""
    if not isinstance(s, ast.Return):
        return None
    return "before" if isinstance(s.value, ast.Constant) and s.value.value is True else "refuse"


def _after_self_assignment(attr: str, op: type[ast.operator] | None, value: object) -> Where:
    """After ``self.<attr> = value`` (op None) or ``self.<attr> <op>= value``."""

    def for_self(self_name: str) -> Callable[[ast.stmt], str | None]:
        def match(s: ast.stmt) -> str | None:
            if op is None and isinstance(s, ast.Assign) and len(s.targets) == 1:
                target, v = s.targets[0], s.value
            elif op is not None and isinstance(s, ast.AugAssign) and isinstance(s.op, op):
                target, v = s.target, s.value
            else:
                return None
            if isinstance(target, ast.Attribute) and target.attr == attr and isinstance(target.value, ast.Name) and target.value.id == self_name:
                if isinstance(v, ast.Constant) and type(v.value) is type(value) and v.value == value:
                    return "after"
            return None

        return match

    return for_self


def _edits() -> dict[type, list[tuple[str, str, Where, int]]]:
    """Per class: (method, template, where, how many insertions it must
    get, 0 for at least one)."""
    return {
        locks.Lock: [
            ("acquire", LOCK_ACQUIRED, lambda self_name: _at_return_true, 0),
            ("release", LOCK_RELEASED, _after_self_assignment("_locked", None, False), 1),
        ],
        locks.Semaphore: [
            ("acquire", SEM_ACQUIRED, lambda self_name: _at_return_true, 0),
            ("release", SEM_RELEASED, _after_self_assignment("_value", ast.Add, 1), 1),
        ],
    }


def rewritten(func: Any, template: str, where: Where, expected: int = 0) -> CodeType | None:
    """``func``'s code compiled again from its own source with ``template``
    inserted where ``where(self_name)`` says; None if the source is missing
    or does not compile back to exactly ``func``'s code (frozen or edited
    stdlib, someone else's patch), or the places are not as expected."""
    if not isinstance(func, FunctionType):
        return None
    code = func.__code__
    tree = _method_source(code)
    if tree is None:
        return None
    plain = _compiled(tree, code)
    if plain is None or not _same(plain, code):
        return None
    fn = tree.body[-1].body[0]  # type: ignore[attr-defined]
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not fn.args.args:
        return None
    self_name = fn.args.args[0].arg
    n = _insert(fn, self_name, template, where(self_name))
    if n < 1 or (expected and n != expected):
        return None
    new = _compiled(tree, code)
    if new is None or new.co_freevars:
        return None
    return new


# -- fallback: set-only descriptors, when asyncio's source cannot be recompiled --------


class _LockedSlot:
    """``Lock._locked``: records the acquiring task when set to True."""

    __slots__ = ("pt",)

    def __init__(self, pt: PrimitiveTracker) -> None:
        self.pt = pt

    def __set__(self, obj: Any, value: Any, _cur: Any = _this_task, _mono: Any = _monotonic) -> None:
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

    def __set__(self, obj: Any, value: Any, _cur: Any = _this_task, _mono: Any = _monotonic) -> None:
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
                        holders[id(task)] = (_ref(task), _mono())
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
        # how holders are recorded, per class: "code" or "descriptor"
        self.holders_via: dict[str, str] = {}

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
        fallback = {locks.Lock: ("_locked", _LockedSlot), locks.Semaphore: ("_value", _ValueSlot)}
        for cls, edits in _edits().items():
            how = self._rewrite(cls, edits)
            if how == "descriptor":
                attr, slot = fallback[cls]
                self._set(cls, attr, slot(self))
            self.holders_via[cls.__name__] = how

    def _rewrite(self, cls: type, edits: list[tuple[str, str, Where, int]]) -> str:
        """Recompile ``cls``'s methods with the recording statements: "code"
        if all of them could be, else "descriptor" (and none is changed)."""
        me = sys.modules[__name__]
        new: list[tuple[FunctionType, CodeType]] = []
        for name, template, where, expected in edits:
            func = cls.__dict__.get(name)
            try:
                code = rewritten(func, template, where, expected)
            except Exception as e:  # noqa: BLE001 - a parser or compiler surprise
                self.note_error(e)
                code = None
            if code is None or func.__globals__.get(_G, me) is not me:  # type: ignore[union-attr]
                return "descriptor"
            new.append((func, code))  # type: ignore[arg-type]
        for func, code in new:
            # The function object stays (bound methods such as a Condition's
            # acquire follow); its code changes.  The global stays after
            # uninstall: a task suspended in the new code still runs it.
            func.__globals__[_G] = me
            self._patches.append((func, "__code__", func.__code__))
            func.__code__ = code
        return "code"

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
        chained = False
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
                chained = True
            f = f.f_back
        if chained and obj in self.objects:  # another patched __init__ of the chain registered it
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


def holders_of(obj: Any) -> tuple[list[tuple[Any, float | None, int]], bool]:
    """[(task or None if gone, since_mono, task id)], and whether the list is known.

    Lock: the recorded holder while locked.  Semaphore: recorded holders.
    Condition: its lock's.  Unknown when the lock was taken before the agent.
    Attributes are read with getattr, never through ``__dict__``: on 3.11
    reading an object's ``__dict__`` gives it a real dict for good, and every
    attribute access asyncio makes on it afterwards is slower.
    """
    if isinstance(obj, locks.Lock):
        if not getattr(obj, "_locked", False):
            return [], True
        h = getattr(obj, "_ls_holder", None)
        if h is None:
            return [], False
        return [(h[0](), h[1], h[2])], True
    if isinstance(obj, locks.Semaphore):
        hs = list((getattr(obj, "_ls_holders", None) or {}).items())
        out = [(r(), s, i) for i, (r, s) in hs]
        bound = getattr(obj, "_bound_value", None)
        if bound is None:
            return out, True
        taken = bound - getattr(obj, "_value", 0)
        pt = _active
        if pt is not None and pt.holders_via.get("Semaphore") == "code":
            # a woken waiter owns its permit before it runs and records it
            taken -= sum(1 for f in list(getattr(obj, "_waiters", None) or ()) if f.done() and not f.cancelled())
        return out, len(out) == taken
    if isinstance(obj, locks.Condition):
        return holders_of(obj._lock)
    kind = kind_of(obj) or ""
    if kind.startswith("janus."):
        return holders_of(obj._async_mutex)
    mod = type(obj).__module__ or ""
    if mod.startswith("anyio") and hasattr(obj, "_owner_task"):
        t = obj._owner_task
        return ([(t, None, id(t))] if t is not None else []), True
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
    name = kind + ("." + first.rsplit(".", 1)[1] if "." in first else "")
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
