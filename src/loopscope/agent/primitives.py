"""Synchronization primitives: who holds them, who waits, since when.

What is patched (``PrimitiveTracker.install``, undone by ``uninstall``), all
on asyncio's own classes so ``isinstance`` and user subclasses keep working:

* ``__init__`` of Lock, Semaphore, Event, Condition, Queue and Barrier
  (BoundedSemaphore, PriorityQueue, LifoQueue inherit it): the object and its
  creation site go into a weak registry (weakreg.py).  Objects asyncio
  makes for itself (a Condition's Lock, a Queue's Event, a Barrier's
  Condition) are not listed on their own: they are shown through their
  owner.
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

anyio (its asyncio backend): the public constructors of Lock, Semaphore,
Event and CapacityLimiter (``__new__``, which returns the backend's object,
or an adapter outside a loop), Condition's and a memory object stream
pair's state's ``__init__`` register what the program makes, at its line;
what anyio makes for itself (the Event of every task handle, the ones a
Condition or stream makes per wait, the asyncio.Event inside each anyio
Event) is rejected after one dictionary lookup once its creating code was
judged (``anyio_verdict``).  Holders and waiters are read from anyio's own
attributes: nothing else of anyio is patched.

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
import os
import sys
import time
import typing
import weakref
from asyncio import locks, queues
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any

from .tracker import _SKIP_DIRS, _is_skipped, _skip_cache, _speedups
from .weakreg import WeakRegistry

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
_NO_KIND = object()  # not in _kinds yet

# anyio's primitives are classes of ``anyio._core._synchronization`` (the
# public names; the asyncio backend's classes and the adapters anyio makes
# outside a running loop derive from them), plus the shared state of a
# memory object stream pair.
ANYIO_SYNC = "anyio._core._synchronization"
ANYIO_NAMES = frozenset({"Lock", "Semaphore", "Event", "Condition", "CapacityLimiter"})
ANYIO_STREAM_STATE = "_MemoryObjectStreamState"
# What the agent patches in anyio, by module: (class, method) that
# registers the object (anyio's TaskGroup is groups.py's).  ``anyio.Lock()``
# is ``Lock.__new__`` returning the backend's Lock (or an adapter outside a
# loop), which Python then initialises a second time: wrapping the public
# ``__new__`` sees each object made through the public name once, with the
# caller's frame right above, and anyio's own uses of the backend classes
# (an Event in every task handle) not at all.
ANYIO_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    ANYIO_SYNC: (("Lock", "__new__"), ("Semaphore", "__new__"), ("Event", "__new__"), ("CapacityLimiter", "__new__"), ("Condition", "__init__")),
    "anyio.streams.memory": ((ANYIO_STREAM_STATE, "__init__"),),
}


_anyio_bases: set[type] = set()  # the public classes, once anyio._core._synchronization is patched


def _is_anyio_base(c: type) -> bool:
    """One of anyio's public primitive classes.  anyio renames the
    ``__module__`` of some of them to "anyio" when it is imported: by
    identity once the module was patched, else by name."""
    if _anyio_bases:
        return c in _anyio_bases
    return c.__name__ in ANYIO_NAMES and c.__module__ in ("anyio", ANYIO_SYNC)


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
    if kind is None and mod.startswith("anyio"):
        if cls.__name__ == ANYIO_STREAM_STATE:
            kind = "anyio.MemoryObjectStream"
        else:
            kind = next((f"anyio.{c.__name__}" for c in cls.__mro__ if _is_anyio_base(c)), None)
    if len(_kinds) < 1000:
        _kinds[cls] = kind
    return kind


# -- libraries whose own frames are not creation sites -----------------------------------
#
# janus and anyio build their primitives from asyncio's (and anyio from its
# own): those are internals, shown through the object the user made.  Their
# package directories are added here when they are patched.

LIBRARY_DIRS: tuple[str, ...] = ()
ANYIO_DIRS: tuple[str, ...] = ()
_TYPING_FILE = typing.__file__  # create_memory_object_stream[int](...) goes through typing's __call__


def add_library_dir(directory: str, anyio: bool = False) -> None:
    global LIBRARY_DIRS, ANYIO_DIRS
    if directory not in LIBRARY_DIRS:
        LIBRARY_DIRS = (*LIBRARY_DIRS, directory)
        _user_callers.clear()  # judged without this directory
    if anyio and directory not in ANYIO_DIRS:
        ANYIO_DIRS = (*ANYIO_DIRS, directory)


#: id(code) -> code of the functions ``register`` found to be user code
#: right at the constructor's caller (no frame to walk past): a primitive
#: they make is recorded at their line by the wrapped ``__init__`` itself,
#: without ``register``'s walk.  Servers make primitives per request
#: (uvicorn: an ``asyncio.Event`` for each).  Emptied when a library
#: directory is added, since the verdict depends on them.
_user_callers: dict[int, CodeType] = {}


def package_dir(module: Any) -> str:
    """The top-level package directory of ``module`` (with a separator)."""
    top = sys.modules.get(module.__name__.partition(".")[0])
    path = getattr(top, "__file__", None) or module.__file__
    return os.path.dirname(os.path.abspath(path)) + os.sep


PLUMBING, INTERNAL, OWN = 0, 1, 2
# Both caches below are keyed by id(code) and keep the code object alive:
# hashing a code object hashes its bytecode and constants every time.
_anyio_verdicts: dict[int, tuple[CodeType, int]] = {}


def anyio_verdict(frame: Any) -> int:
    """What an anyio frame on the way from an object's constructor to its
    creator is: PLUMBING (``__new__``, ``create_*``: anyio passing the
    user's call on, as ``create_task_group()`` does), INTERNAL (a method of
    another primitive, such as ``Condition.wait`` making its Event) or OWN
    (anyio making something for itself elsewhere, such as the Event of
    every task handle).  Primitives are registered only past plumbing; a
    task group anyio makes for itself is listed at anyio's line.  Kept per
    code object (an ``__init__`` asked here makes another object than its
    own, as stable as any method), so an anyio task spawn or a blocking
    stream ``receive`` judges its frames once, not each time."""
    code = frame.f_code
    hit = _anyio_verdicts.get(id(code))
    if hit is not None:
        return hit[1]
    if code.co_name == "__new__" or code.co_name.startswith("create_"):
        verdict = PLUMBING
    else:
        try:
            owner = frame.f_locals.get("self")
        except Exception:  # noqa: BLE001
            owner = None
        state = getattr(owner, "_state", None) if owner is not None else None
        inside = owner is not None and (kind_of(owner) is not None or (state is not None and kind_of(state) is not None))
        verdict = INTERNAL if inside else OWN
    if len(_anyio_verdicts) < 10_000:
        _anyio_verdicts[id(code)] = (code, verdict)
    return verdict


_init_codes: dict[type, tuple[frozenset[int], tuple[CodeType, ...]]] = {}


def own_init_codes(cls: type) -> frozenset[int]:
    """The ids of the code of every ``__init__`` along ``cls``'s MRO (the
    originals under our wrappers too): a library frame running one of them
    may be the object's own constructor chain; any other is not, and its
    locals need not be read to know it."""
    hit = _init_codes.get(cls)
    if hit is None:
        found: list[CodeType] = []
        for c in cls.__mro__:
            fn = c.__dict__.get("__init__")
            while fn is not None:
                code = getattr(fn, "__code__", None)
                if code is not None:
                    found.append(code)
                fn = getattr(fn, "__wrapped__", None)
        hit = (frozenset(map(id, found)), tuple(found))
        if len(_init_codes) < 1000:
            _init_codes[cls] = hit
    return hit[0]


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
        self.objects = WeakRegistry()
        self._patches: list[tuple[Any, str, Any]] = []
        self.installed = False
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
        registry = self.objects.data
        pop = self.objects._pop

        def slow(obj: Any, caller: Any) -> None:
            """What the wrapper below does after its fast path (the
            compiled one calls it for anything but that path)."""
            try:
                code = caller.f_code
                hit = _anyio_verdicts.get(id(code))
                # made by anyio code already judged (the asyncio.Event in
                # every anyio Event): one lookup, not the walk
                if hit is None or hit[1] == PLUMBING or id(code) in own_init_codes(type(obj)):
                    pt.register(obj, caller)
            except Exception as e:  # noqa: BLE001
                pt.note_error(e)

        if _speedups is not None and self.tracker.config.speedups and isinstance(orig, FunctionType):
            # the same, compiled (_speedups.c, PrimInit): servers make a
            # primitive per request (uvicorn an Event)
            self._set(
                cls, "__init__",
                _speedups.PrimInit(orig=orig, users=_user_callers, kinds=_kinds, registry=registry, pop=pop, slow=slow, note_error=pt.note_error),
            )
            return
        user_get = _user_callers.get
        kinds_get = _kinds.get

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            orig(self, *args, **kwargs)
            try:
                caller = _getframe(1)
                code = caller.f_code
                if user_get(id(code)) is code:
                    # register()'s verdict for this caller, remembered:
                    # its record, stored the way WeakRegistry does
                    kind = kinds_get(type(self), _NO_KIND)
                    if kind is not _NO_KIND:
                        registry[_ref(self, pop)] = (kind or type(self).__name__, code, caller.f_lasti, _monotonic())
                        return
            except Exception as e:  # noqa: BLE001
                pt.note_error(e)
                return
            slow(self, caller)

        __init__.__wrapped__ = orig  # type: ignore[attr-defined]
        __init__.__qualname__ = orig.__qualname__
        __init__.__doc__ = orig.__doc__
        self._set(cls, "__init__", __init__)

    def _wrap_new(self, cls: type) -> None:
        """``__new__`` (a static method) of a class whose constructor
        returns an object of another class (anyio's public primitives)."""
        orig = cls.__dict__["__new__"]
        func = orig.__func__ if isinstance(orig, staticmethod) else orig
        pt = self

        def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
            obj = func(klass, *args, **kwargs)
            try:
                caller = _getframe(1)
                hit = _anyio_verdicts.get(id(caller.f_code))
                # anyio's own (the Event of every task handle): one lookup
                if hit is None or hit[1] == PLUMBING:
                    pt.register(obj, caller)
            except Exception as e:  # noqa: BLE001
                pt.note_error(e)
            return obj

        __new__.__wrapped__ = func  # type: ignore[attr-defined]
        __new__.__qualname__ = func.__qualname__
        __new__.__doc__ = func.__doc__
        self._set(cls, "__new__", staticmethod(__new__))

    def patch_janus(self, module: Any) -> None:
        """janus.Queue: registered as one queue (its asyncio Lock and
        Conditions are its internals, not listed on their own)."""
        cls = getattr(module, "Queue", None)
        if not isinstance(cls, type) or "__init__" not in cls.__dict__ or any(p[0] is cls for p in self._patches):
            return
        add_library_dir(package_dir(module))
        self._wrap_init(cls)

    def patch_anyio(self, module: Any) -> None:
        """anyio's primitives (ANYIO_CLASSES, by module): registered with
        the user's line.  Only creation is patched; holders and waiters are
        read from anyio's own attributes when asked."""
        try:
            add_library_dir(package_dir(module), anyio=True)
            if module.__name__ == ANYIO_SYNC:
                _anyio_bases.update(c for c in (getattr(module, n, None) for n in ANYIO_NAMES) if isinstance(c, type))
                _kinds.clear()
            for name, method in ANYIO_CLASSES.get(module.__name__, ()):
                cls = getattr(module, name, None)
                if isinstance(cls, type) and method in cls.__dict__ and not any(p[0] is cls for p in self._patches):
                    (self._wrap_new if method == "__new__" else self._wrap_init)(cls)
        except Exception as e:  # noqa: BLE001
            self.note_error(e)

    def register(self, obj: Any, frame: Any) -> None:
        """Called from __init__: find the creating user frame and record it.

        Objects whose first non-loopscope creator is asyncio, janus or
        anyio itself are their internals (a Condition's Lock, an anyio
        Event's asyncio.Event, the Event of each anyio task handle): not
        registered.  anyio's constructor plumbing (``anyio.Lock()`` goes
        through ``Lock.__new__`` and the backend's ``create_lock``) is
        passed over to the user's line."""
        f = frame
        skip_get = _skip_cache.get
        chained = False
        while f is not None:
            fn = f.f_code.co_filename
            s = skip_get(fn)
            if s is None:
                s = _is_skipped(fn)
            lib = bool(LIBRARY_DIRS) and fn.startswith(LIBRARY_DIRS)
            if not s and not lib:
                if fn == _TYPING_FILE:  # a generic class called subscripted
                    f = f.f_back
                    continue
                break
            if fn.startswith(ASYNCIO_DIR) or lib:
                if id(f.f_code) in own_init_codes(type(obj)) and f.f_locals.get("self") is obj:
                    chained = True  # a subclass __init__ chain of the object itself
                elif not (ANYIO_DIRS and fn.startswith(ANYIO_DIRS) and anyio_verdict(f) == PLUMBING):
                    return  # made by asyncio's, janus's or anyio's own code
            f = f.f_back
        if chained and obj in self.objects:  # another patched __init__ of the chain registered it
            return
        kind = kind_of(obj) or type(obj).__name__
        if f is None:
            self.objects[obj] = (kind, None, 0, _monotonic())
        else:
            code = f.f_code
            self.objects[obj] = (kind, code, f.f_lasti, _monotonic())
            if f is frame and len(_user_callers) < 10_000:
                _user_callers[id(code)] = code  # see _wrap_init

    # -- reading (server thread) -------------------------------------------------

    def live(self) -> list[tuple[Any, tuple]]:
        return self.objects.live()


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
    if kind.startswith("anyio."):
        return anyio_holders(kind, obj)
    return [], True


# -- anyio: everything read from anyio's own attributes -----------------------------------
#
# On the asyncio backend anyio keeps what a reader needs: a Lock its owner
# task and (task, future) waiters, a Semaphore its value and waiter
# futures, an Event an asyncio.Event, a CapacityLimiter its borrowers and
# an asyncio.Event per waiting borrower, a Condition its Lock and one anyio
# Event per waiter, a memory object stream pair its buffer and one anyio
# Event per blocked sender or receiver.  Outside a running loop anyio makes
# adapters whose backend object appears at first use.  A Semaphore's
# holders are not recorded by anyio (and recording them would mean patching
# acquire and release): unknown.

_ADAPTED = ("_internal_lock", "_internal_semaphore", "_internal_event", "_internal_limiter")
_NONE = object()


def anyio_backend(obj: Any) -> Any:
    """The backend object behind an anyio adapter (None before its first
    use), or ``obj`` itself."""
    for attr in _ADAPTED:
        inner = getattr(obj, attr, _NONE)
        if inner is not _NONE:
            return inner
    return obj


def anyio_holders(kind: str, obj: Any) -> tuple[list[tuple[Any, float | None, int]], bool]:
    if kind == "anyio.Condition":
        lock = getattr(obj, "_lock", None)
        return anyio_holders("anyio.Lock", lock) if lock is not None else ([], True)
    inner = anyio_backend(obj)
    if inner is None:
        return [], True
    if kind == "anyio.Lock":
        t = getattr(inner, "_owner_task", None)
        return ([(t, None, id(t))] if t is not None else []), True
    if kind == "anyio.CapacityLimiter":
        borrowers = list(getattr(inner, "_borrowers", None) or ())
        tasks = [b for b in borrowers if isinstance(b, _Task)]
        return [(t, None, id(t)) for t in tasks], len(tasks) == len(borrowers)
    if kind == "anyio.Semaphore":
        return [], getattr(inner, "_value", 0) == getattr(inner, "_max_value", None)
    return [], True


def _event_futures(event: Any) -> list[Any]:
    """The waiter futures of an anyio Event (through its asyncio.Event)."""
    inner = anyio_backend(event)
    aio = getattr(inner, "_event", None) if inner is not None else None
    return list(getattr(aio, "_waiters", None) or ())


def anyio_waiters(kind: str, obj: Any) -> list[tuple[str, list[Any]]]:
    if kind == "anyio.MemoryObjectStream":
        receivers = [f for ev in list(obj.waiting_receivers) for f in _event_futures(ev)]
        senders = [f for ev in list(obj.waiting_senders) for f in _event_futures(ev)]
        return [("receive", receivers), ("send", senders)]
    if kind == "anyio.Condition":
        waits = [f for ev in list(obj._waiters) for f in _event_futures(ev)]
        return [("wait", waits), *anyio_waiters("anyio.Lock", obj._lock)]
    if kind == "anyio.Event":
        return [("wait", _event_futures(obj))]
    inner = anyio_backend(obj)
    if inner is None:
        return []
    if kind == "anyio.Lock":
        return [("acquire", list(inner._waiters))]  # (task, future) pairs
    if kind == "anyio.Semaphore":
        return [("acquire", list(inner._waiters))]
    if kind == "anyio.CapacityLimiter":
        return [("acquire", [f for ev in list(inner._wait_queue.values()) for f in list(ev._waiters or ())])]
    return []


def anyio_state(kind: str, obj: Any) -> dict[str, Any]:
    st: dict[str, Any] = {}
    if kind in ("anyio.Lock", "anyio.Condition"):
        st["locked"] = bool(obj.locked())
        st["text"] = "locked" if st["locked"] else "unlocked"
    elif kind == "anyio.Semaphore":
        value = obj.value
        st["value"] = value
        top = obj.max_value
        st["text"] = f"value={value}" + (f"/{top}" if top is not None else "")
    elif kind == "anyio.Event":
        st["set"] = bool(obj.is_set())
        st["text"] = "set" if st["set"] else "not set"
    elif kind == "anyio.CapacityLimiter":
        st["text"] = f"{obj.borrowed_tokens}/{_count(obj.total_tokens)} tokens borrowed"
    elif kind == "anyio.MemoryObjectStream":
        size, top = len(obj.buffer), obj.max_buffer_size
        st["size"], st["maxsize"] = size, (top if top != float("inf") else 0)
        st["text"] = f"size {size}/{_count(top)}, {obj.open_send_channels} send / {obj.open_receive_channels} receive ends open"
    return st


def _count(n: float) -> str:
    return "∞" if n == float("inf") else str(int(n))


def waiter_deques(obj: Any) -> list[tuple[str, Any]]:
    """(role, deque of futures) for the tasks blocked on ``obj``; anyio's
    Lock gives (task, future) pairs."""
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
    if kind.startswith("anyio."):
        return anyio_waiters(kind, obj)
    return []


def future_of(entry: Any) -> Any:
    """A waiter entry as a future: anyio's Lock keeps (task, future) pairs."""
    return entry[1] if isinstance(entry, tuple) else entry


def waiters_of(obj: Any) -> list[tuple[str, Any, Any, float | None]]:
    """[(role, task, future, since_mono)] for tasks blocked on ``obj``."""
    out = []
    for role, dq in waiter_deques(obj):
        if not dq:
            continue
        for entry in list(dq):
            fut = future_of(entry)
            if fut.done():
                continue
            task = entry[0] if isinstance(entry, tuple) else _task_of_future(fut)
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
        elif (kind_of(obj) or "").startswith("anyio."):
            st = anyio_state(kind_of(obj) or "", obj)
    except Exception:  # noqa: BLE001
        st.setdefault("text", "?")
    return st


# anyio's memory object streams: the frame a blocked receive or send waits in
ANYIO_STREAM_WAITS = frozenset({"MemoryObjectReceiveStream.receive", "MemoryObjectSendStream.send"})


def primitive_of_frame(frame: Any) -> Any:
    """The primitive a suspended wait frame belongs to (``self``), if any."""
    code = frame.f_code
    owner, _, meth = code.co_qualname.rpartition(".")
    stream = code.co_qualname in ANYIO_STREAM_WAITS
    if not owner or (meth not in ("acquire", "wait", "wait_for", "get", "put", "_block", "_wait") and not stream):
        return None
    try:
        self_obj = frame.f_locals.get("self")
    except Exception:  # noqa: BLE001
        return None
    if self_obj is None:
        return None
    if stream:
        return getattr(self_obj, "_state", None)
    if kind_of(self_obj) is not None:
        return self_obj
    mod = type(self_obj).__module__ or ""
    if mod.startswith("janus") and hasattr(self_obj, "_parent"):
        return self_obj._parent
    return None


# -- "waiting on Lock (created at app.py:12) held by task 'audit' for 12.4 s" --------------

_active: PrimitiveTracker | None = None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def unregistered_origin(kind: str) -> str:
    """Why a primitive is not in the registry: made before the agent, or
    (anyio's) made by anyio for itself, which is not listed on its own."""
    return "created by anyio itself or before loopscope" if kind.startswith("anyio.") else "created before loopscope"


def adapter_above(outer: list[Any], obj: Any) -> Any:
    """The anyio adapter whose backend object ``obj`` is, if the wait went
    through one: ``anyio.Lock()`` made outside a loop is a LockAdapter,
    whose ``__aenter__`` awaits its backend Lock's ``acquire`` directly.
    ``outer`` are the frames above the wait, outermost first; only anyio's
    adapter frames right above it are read."""
    for frame in reversed(outer):
        code = frame.f_code
        if not (ANYIO_DIRS and code.co_filename.startswith(ANYIO_DIRS)):
            return None
        if code.co_qualname.rpartition(".")[0].endswith("Adapter"):
            try:
                adapter = frame.f_locals.get("self")
            except Exception:  # noqa: BLE001
                return None
            if adapter is not None and anyio_backend(adapter) is obj:
                return adapter
    return None


def wait_detail(target: Any, obj: Any, outer: list[Any] | None = None) -> None:
    """Rewrite a WaitTarget's description with the creation site and holder
    (used by introspect.waiting_on for ps/inspect)."""
    pt = _active
    if pt is None:
        return
    owner = (adapter_above(outer, obj) if outer else None) or obj
    rec = pt.objects.get(owner)
    kind = (rec[0] if rec else None) or kind_of(owner) or type(owner).__name__
    if rec is not None and rec[1] is not None:
        from .tracker import code_lineno

        where = f"created at {rec[1].co_filename}:{code_lineno(rec[1], rec[2])}"
    elif rec is not None:
        where = "created outside any user code"
    else:
        where = unregistered_origin(kind)
    first, _, rest = target.description.partition(" ")
    name = kind + ("." + first.rsplit(".", 1)[1] if "." in first else "")
    desc = f"{name} ({where})"
    target.object_id = hex(id(owner))
    if target.kind in ("lock", "semaphore", "limiter"):
        holders, known = holders_of(owner)
        now = _monotonic()
        if target.kind == "limiter" and rest:
            desc += " " + rest
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
        elif not known and kind == "anyio.Semaphore":
            desc += f" {rest} (anyio does not record who holds its permits)".replace("  ", " ")
        elif not known and target.kind == "limiter":
            desc += " (borrowed on behalf of objects that are not tasks)"
        elif not known:
            desc += " held by an unknown task (acquired before loopscope was installed)"
        elif kind_of(owner) in ("Semaphore", "BoundedSemaphore"):
            desc += f" (value={getattr(owner, '_value', '?')})"
    elif rest:
        desc += " " + rest
    target.description = desc
