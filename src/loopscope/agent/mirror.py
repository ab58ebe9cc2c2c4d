"""The agent side of ``top``'s mirror: ``tasks.delta`` in C-level passes.

``top`` keeps a copy of every live task's cheap columns; each call tells one
client (one cursor) which tasks its copy lacks, which of its tasks ended,
and, with ``stats``, which of them ran.  With 100,000 tasks and a refresh a
second, the call must cost the program a few per cent of its GIL, so in the
steady state no Python code runs per task:

* **A task is known by a weak reference to it.**  On 3.11–3.13 asyncio
  keeps every task in a ``WeakSet``; copying the ``set`` of references
  under it is one C call, and set differences against the references this
  cursor has seen give the tasks created and the tasks freed since its last
  call.  A reference's hash is cached, a live one equals only references to
  the same task, and a dead one equals only itself, so a new task at a
  reused address is never taken for the old one, whether loopscope created
  it or not.  3.14+ keeps tasks in per-thread C lists that only
  ``all_tasks`` walks: there each loop's ``all_tasks`` is compared by
  count with what the cursor holds, and only when they differ are the held
  tasks taken out of it (as sets) to find the new ones; a reference is made
  for each task the cursor takes.  ``all_tasks`` itself costs ~25 ms per
  100,000 tasks, so it is skipped while the loop's task factory (ours)
  has made no task since the last scan: only tasks made without the
  factory (``asyncio.Task(...)`` called directly) can then be missing,
  and a scan at least every ``RESCAN_S`` seconds finds those.
* **What is not shown is remembered.**  The WeakSet also holds finished
  tasks the program still references and tasks of loops the agent does not
  watch; a cursor looks at each such task once and keeps its reference
  aside until it is freed.
* **An end needs no ``done()`` per task.**  A task finishes only inside one
  of its own steps, and on hooked loops every step of our task classes
  rewrites ``_ls_busy`` right after it (steps.py).  Comparing the busy times
  with the ones kept (a ``map`` and a list comparison per slice) finds the
  tasks that ran; only those are asked ``done()``, and the same comparison
  is what ``stats`` needs for ``changed``.  The busy time is read *before*
  ``done()``: a step that ends the task after the read rewrites it again
  and is seen next call.  Tasks whose steps nobody times (uvloop, metrics
  off, tasks loopscope did not create) are asked ``done()`` every call,
  also in C.  A last step that left the busy time equal (timed at 0.0 s,
  or the hook's bookkeeping failed) would hide an end: each call also asks
  ``done()`` of one slice of CHUNK timed tasks, in rotation, so such a
  finished task, if the program still references it, is listed for at
  most len/CHUNK more calls (a freed one leaves at the next call).

Every pass over the tasks runs over slices of ``CHUNK``: one C call over
100,000 tasks holds the GIL for tens of milliseconds and stalls the loop as
long ("Queries run off the loop", docs/architecture.md).  Per task a cursor
keeps a weak reference, an int and a float.  On 3.11–3.13 the reference is
the one asyncio already made, so nothing new is tracked by the garbage
collector; on 3.14+ it is made by the first cursor that takes the task
(and shared by the others: ``weakref.ref`` returns the existing one).
"""

from __future__ import annotations

import collections
import itertools
import operator
import sys
import time
import weakref
from asyncio import tasks as _aio_tasks
from asyncio.futures import _get_loop
from collections.abc import Callable, Iterable
from itertools import compress, count, repeat
from typing import Any

from .loops import counted, creation_counter, live_tasks

#: Tasks per C-level pass: about a millisecond of GIL on a slow machine.
CHUNK = 4096
#: 3.14+: longest time between two ``all_tasks`` scans of a loop whose
#: factory made no task; how late a task made without it can appear.
RESCAN_S = 5.0

_call = operator.call
_done = operator.methodcaller("done")
_loop_of = operator.methodcaller("get_loop")
_ne = operator.ne
_not = operator.not_
_is = operator.is_
_is_not = operator.is_not
_NEW_ASYNCIO = sys.version_info >= (3, 14)
#: The busy time read for a freed task and kept for a dropped one: unequal to any float.
_NO_BUSY = object()


class _Freed:
    """Stands for a freed task (its reference gives None) where ``done()``
    is read in C: it has ended."""

    __slots__ = ()

    def done(self) -> bool:
        return True


class _Vacancy:
    """What a held place refers to once its task is dropped, until the
    lists are compacted: it never reads as having run or ended."""

    __slots__ = ("__weakref__",)
    _ls_busy = _NO_BUSY

    def done(self) -> bool:
        return False


_FREED = _Freed()
_VACANCY = _Vacancy()
_VACANT = weakref.ref(_VACANCY)


# -- passes in C, a slice at a time ----------------------------------------------


def _chunked(fn: Callable[[list[Any]], Iterable[Any]], seq: list[Any]) -> list[Any]:
    """``fn`` over ``seq`` one slice of CHUNK at a time, results concatenated:
    the GIL can change hands between slices."""
    out: list[Any] = []
    for lo in range(0, len(seq), CHUNK):
        out += fn(seq[lo : lo + CHUNK])
    return out


def _deref(refs: list[Any]) -> Iterable[Any]:
    return map(_call, refs)


def _busy_refs(refs: list[Any]) -> list[Any]:
    """The busy time of each referenced task, _NO_BUSY for a freed one.

    ``getattr`` with a default rather than ``attrgetter``: as fast
    (measured on 3.11, 3.13, 3.14), and a task freed since the snapshot,
    which under churn happens during almost every call, needs no second
    read."""
    return list(map(getattr, map(_call, refs), repeat("_ls_busy"), repeat(_NO_BUSY)))


def _busy_any(tasks: list[Any]) -> Iterable[Any]:
    """The busy time of each task, None where it has none."""
    return map(getattr, tasks, repeat("_ls_busy"), repeat(None))


def _done_flags(tasks: list[Any]) -> list[bool]:
    """``done()`` of each task; a freed one (None) counts as done."""
    try:
        return list(map(_done, tasks))
    except AttributeError:
        patched = list(tasks)
        for i in list(compress(count(), map(_is, patched, repeat(None)))):
            patched[i] = _FREED
        return list(map(_done, patched))


def _ended_refs(refs: list[Any]) -> list[bool]:
    """Whether each referenced task is finished or freed."""
    return _done_flags(list(map(_call, refs)))


def _loops_of(tasks: list[Any]) -> list[Any]:
    """The loop of each task as ``all_tasks`` finds it: ``get_loop()``, or
    ``_loop`` for an object registered with asyncio that lacks it."""
    try:
        return list(map(_loop_of, tasks))
    except AttributeError:
        return [_get_loop(t) for t in tasks]


def _where(test: Callable[[list[Any]], Iterable[Any]], refs: list[Any]) -> list[int]:
    """Positions of the references for which ``test`` (over a slice) is false."""
    return list(compress(count(), map(_not, _chunked(test, refs))))


def _permuted(seq: list[Any], order: list[int]) -> list[Any]:
    """``[seq[i] for i in order]``, a slice at a time in C."""
    return _chunked(lambda part: map(seq.__getitem__, part), order)


def _address_order(tasks: list[Any], n: int) -> list[int]:
    """Indices of the first ``n`` tasks in runs of CHUNK sorted by address.

    Snapshots come in hash order, which jumps across the heap; held in
    address order, each later pass reads memory in order and costs half
    as much (27 vs 13 ms per 100,000 tasks, 3.11 and 3.13 alike).  Sorted
    runs of CHUNK do as well as one sort of everything, and each sort is
    a short C call."""
    ids = list(map(id, tasks[:n]))
    order: list[int] = []
    for lo in range(0, n, CHUNK):
        order += sorted(range(lo, min(n, lo + CHUNK)), key=ids.__getitem__)
    return order


def _asyncio_weakset() -> Any:
    """The WeakSet in which 3.11–3.13 register every task (``_all_tasks``,
    ``_scheduled_tasks`` from 3.12), or None where it is not the whole
    registry: 3.14+ registers only tasks that are not C tasks there."""
    if _NEW_ASYNCIO:
        return None
    ws = getattr(_aio_tasks, "_all_tasks", None)
    if ws is None:
        ws = getattr(_aio_tasks, "_scheduled_tasks", None)
    return ws if isinstance(ws, weakref.WeakSet) and isinstance(getattr(ws, "data", None), set) else None


# -- what one client holds --------------------------------------------------------


class Held:
    """One loop's tasks as one client holds them.

    ``refs``, ``ids`` and ``busy`` are aligned: the task's weak reference,
    the id the client knows it by, and the busy time last compared.
    ``plain_refs``/``plain_ids`` are tasks whose steps nobody times, asked
    ``done()`` on every call instead.

    A dropped task leaves a vacancy (``_VACANT``) instead of being cut out:
    rebuilding the lists touches the reference count of every object in
    them (~15 ms per 100,000 on a slow machine), so that waits until an
    eighth of the places are vacant.  Positions stay valid until then.
    """

    __slots__ = ("refs", "ids", "busy", "plain_refs", "plain_ids", "vacant", "sweep")

    def __init__(self) -> None:
        self.refs: list[Any] = []
        self.ids: list[int] = []
        self.busy: list[Any] = []
        self.plain_refs: list[Any] = []
        self.plain_ids: list[int] = []
        self.vacant = 0
        self.sweep = 0  # where the next slice asked done() starts

    def __len__(self) -> int:
        return len(self.refs) + len(self.plain_refs) - self.vacant

    def all_refs(self) -> list[Any]:
        return self.refs + self.plain_refs

    def all_ids(self) -> list[int]:
        return list(compress(self.ids + self.plain_ids, map(_is_not, self.all_refs(), repeat(_VACANT))))

    def add(self, ref: Any, tid: int, busy: Any, timed: bool) -> None:
        if timed:
            self.refs.append(ref)
            self.ids.append(tid)
            self.busy.append(busy)
        else:
            self.plain_refs.append(ref)
            self.plain_ids.append(tid)

    def ran(self) -> tuple[list[int], list[Any]]:
        """Positions of timed tasks whose busy time moved, and the values
        read.  An unchanged slice costs its read and one list comparison,
        which tries identity first: a pointer comparison per task."""
        pos: list[int] = []
        values: list[Any] = []
        refs, busy = self.refs, self.busy
        for lo in range(0, len(refs), CHUNK):
            now = _busy_refs(refs[lo : lo + CHUNK])
            old = busy[lo : lo + CHUNK]
            if now != old:
                moved = list(map(_ne, now, old))
                pos += compress(count(lo), moved)
                values += compress(now, moved)
        return pos, values

    def swept(self) -> list[int]:
        """Positions of ended tasks in the next slice of timed tasks, in
        rotation: an end the busy times hid is found within len/CHUNK calls."""
        n = len(self.refs)
        lo = self.sweep if self.sweep < n else 0
        hi = min(n, lo + CHUNK)
        self.sweep = hi
        return list(compress(range(lo, hi), _ended_refs(self.refs[lo:hi])))

    def drop(self, pos: list[int], plain_pos: list[int]) -> tuple[list[int], list[Any]]:
        """Vacate these places; the ids and references that were there."""
        ids: list[int] = []
        refs: list[Any] = []
        for i in pos:
            ids.append(self.ids[i])
            refs.append(self.refs[i])
            self.refs[i] = _VACANT
            self.busy[i] = _NO_BUSY
        for i in plain_pos:
            ids.append(self.plain_ids[i])
            refs.append(self.plain_refs[i])
            self.plain_refs[i] = _VACANT
        self.vacant += len(pos) + len(plain_pos)
        return ids, refs

    def keep_only(self, live: set[Any]) -> tuple[list[int], list[Any]]:
        """Drop the tasks not in ``live`` (a set of tasks, changed here and restored)."""
        live.add(_VACANCY)  # a vacancy is not a task that ended
        try:
            member = live.__contains__
            return self.drop(
                _where(lambda part: map(member, map(_call, part)), self.refs),
                _where(lambda part: map(member, map(_call, part)), self.plain_refs),
            )
        finally:
            live.discard(_VACANCY)

    def compact(self, now: bool = False) -> None:
        """Cut the vacancies out once they are an eighth of the places."""
        if not now and self.vacant * 8 <= len(self.refs) + len(self.plain_refs):
            return
        keep = _chunked(lambda part: map(_is_not, part, repeat(_VACANT)), self.refs)
        self.refs, self.ids, self.busy = (list(compress(x, keep)) for x in (self.refs, self.ids, self.busy))
        keep = _chunked(lambda part: map(_is_not, part, repeat(_VACANT)), self.plain_refs)
        self.plain_refs, self.plain_ids = (list(compress(x, keep)) for x in (self.plain_refs, self.plain_ids))
        self.vacant = 0

    def resort(self) -> None:
        """Put every place in address order, after a big batch was added.

        Batches arrive sorted, but the first load's 20,000-task batches are
        each a sample of the whole heap: a pass over five of them costs ~1.5x
        one over the same tasks in order (24 vs 16 ms per 100,000, 3.11).  A
        call that adds so many is a first load's; the sort (one C call, of
        sorted runs) is paid then, not per call.  Small batches (churn) are
        tasks made close in time, close in memory already."""
        self.compact(now=True)
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        self.refs, self.ids, self.busy = (_permuted(x, order) for x in (self.refs, self.ids, self.busy))
        order = sorted(range(len(self.plain_ids)), key=self.plain_ids.__getitem__)
        self.plain_refs, self.plain_ids = (_permuted(x, order) for x in (self.plain_refs, self.plain_ids))


class Cursor:
    """Everything the agent keeps for one client between two calls.

    ``held`` maps each watched loop's LoopState to the tasks sent.
    ``members`` is every reference already looked at: held, ``finished``
    (done, still referenced) or ``foreign`` (another loop's); a WeakSet
    snapshot minus ``members`` is what is new.  With ``all_tasks`` (3.14+),
    which lists neither, only held references are members.
    """

    __slots__ = ("stats", "held", "members", "finished", "foreign", "watched", "rotation", "scans")

    def __init__(self, stats: bool) -> None:
        self.stats = stats
        self.held: dict[Any, Held] = {}
        self.members: set[Any] = set()
        self.finished: set[Any] = set()
        self.foreign: set[Any] = set()
        self.watched: frozenset[Any] = frozenset()
        self.rotation = 0
        #: 3.14+: per LoopState, the factory's creation mark and the time
        #: of the last ``all_tasks`` scan (see ``_scan_due``)
        self.scans: dict[Any, tuple[Any, float]] = {}

    def __len__(self) -> int:
        return sum(map(len, self.held.values()))


class Changes:
    """One call's findings, before the new tasks' rows are built."""

    __slots__ = ("removed", "new_tasks", "new_states", "unsent", "changed")

    def __init__(self) -> None:
        self.removed: list[int] = []
        self.new_tasks: list[Any] = []
        self.new_states: list[Any] = []
        #: live tasks not taken for lack of ``limit``, by LoopState
        self.unsent: collections.Counter[Any] = collections.Counter()
        #: encoded ``[id, steps, busy, longest, first_step]`` entries
        self.changed: list[str] = []


class _Pass:
    """What one loop's held tasks showed this call."""

    __slots__ = ("held", "ran", "values", "ended", "plain_ended")

    def __init__(self, held: Held) -> None:
        self.held = held
        self.ran, self.values = held.ran()  # read before done(): see the module docstring
        self.ended = _ended_at(held.refs, self.ran)
        swept = held.swept()
        if swept:
            self.ended = sorted(set(self.ended).union(swept))
        self.plain_ended = list(compress(count(), _chunked(_ended_refs, held.plain_refs)))

    def ended_refs(self) -> list[Any]:
        return list(map(self.held.refs.__getitem__, self.ended)) + list(map(self.held.plain_refs.__getitem__, self.plain_ended))

    def still_running(self) -> tuple[list[int], list[Any]]:
        """The positions that ran and did not end, with their busy times."""
        if not self.ended:
            return self.ran, self.values
        ended = set(self.ended)
        keep = [i not in ended for i in self.ran]
        return list(compress(self.ran, keep)), list(compress(self.values, keep))


# -- one call -------------------------------------------------------------------


def advance(cur: Cursor, states: list[tuple[Any, Any]], timed: frozenset[type], limit: int | None) -> Changes:
    """Bring ``cur`` up to date with the live tasks of the watched loops.

    ``states`` are the watched (loop, LoopState) pairs; ``timed`` the task
    classes whose steps the hook times on hooked loops.  At most ``limit``
    new tasks are taken (the other live ones are counted in ``unsent``) and
    at most ``limit`` ``changed`` entries made, in rotation.
    """
    out = Changes()
    _rewatch(cur, states, out)
    ws = _asyncio_weakset()
    fresh = list(_weakset_news(cur, ws)) if ws is not None else []
    lives = {st: _live_set(loop) for loop, st in states if _scan_due(cur, loop, st)} if ws is None else {}
    passes = [_Pass(held) for held in cur.held.values()]
    for p in passes:
        _set_aside(cur, p.ended_refs(), ws is not None)
    if cur.stats:
        _emit_changed(cur, passes, limit, out)
    else:
        _keep_busy(passes)
    for p in passes:
        out.removed += p.held.drop(p.ended, p.plain_ended)[0]
    for held in cur.held.values():
        held.compact()
    watched = {id(loop): st for loop, st in states}
    if ws is not None:
        _take_new(cur, _chunked(_deref, fresh), fresh, watched, timed, limit, out)
    else:
        _take_new(cur, _all_tasks_news(cur, lives, out), None, watched, timed, limit, out)
        for st in out.unsent:  # the rest must be looked for again next call
            cur.scans.pop(st, None)
    return out


def _live_set(loop: Any) -> set[Any]:
    """3.14+: the loop's unfinished tasks as a set: ``all_tasks``' own, or
    one made, a slice at a time, from the task index's list (taskindex.py)."""
    tasks = live_tasks(loop)
    if isinstance(tasks, set):
        return tasks
    out: set[Any] = set()
    for i in range(0, len(tasks), CHUNK):  # the GIL may change hands between slices
        out.update(tasks[i : i + CHUNK])
    return out


def _creation_mark(loop: Any) -> Any:
    """Something that changes whenever the loop's task factory makes a
    task: our factory's counter and its value; None if the factory is not
    ours (then nothing says when a task was made)."""
    counter = creation_counter(loop)
    if counter is None:
        return None
    return counter, counted(counter)


def _scan_due(cur: Cursor, loop: Any, st: Any) -> bool:
    """3.14+: whether this call must scan the loop's ``all_tasks``.

    Not when the factory has made no task since the last scan (taken
    before it, so a task made during the scan counts as new) and that
    scan is less than RESCAN_S old: every task the factory makes is then
    held already, and held tasks that ended are found by the passes."""
    mark = _creation_mark(loop)
    now = time.monotonic()
    last = cur.scans.get(st)
    if mark is not None and last is not None and last[0] == mark and now - last[1] < RESCAN_S:
        return False
    cur.scans[st] = (mark, now)
    return True


def _rewatch(cur: Cursor, states: list[tuple[Any, Any]], out: Changes) -> None:
    """When the watched loops change: a loop gone takes its tasks with it,
    and tasks set aside as another loop's are looked at again."""
    watched = frozenset(st for _loop, st in states)
    if watched == cur.watched:
        return
    for st in [s for s in cur.held if s not in watched]:
        held = cur.held.pop(st)
        out.removed += held.all_ids()
        cur.members.difference_update(held.all_refs())
    cur.members -= cur.foreign
    cur.foreign = set()
    cur.scans.clear()
    cur.watched = watched


def _weakset_news(cur: Cursor, ws: Any) -> set[Any]:
    """3.11–3.13: the references not looked at yet; freed tasks set aside
    are forgotten.  (A freed held task needs nothing here: its dead
    reference reads as a moved busy time, or as ended, in the passes.)

    The copy of the WeakSet's set is one C call, atomic under the GIL (a
    loop thread adding a task meanwhile cannot break it).  3.12/3.13's
    eager tasks inside their first step join the WeakSet only after it; a
    plain reference to one equals the WeakSet's while the task lives.
    """
    snap = ws.data.copy()
    eager = getattr(_aio_tasks, "_eager_tasks", None)
    if eager:
        snap.update(map(weakref.ref, list(eager)))
    fresh = snap - cur.members
    if len(snap) - len(fresh) != len(cur.members):  # some were freed
        for aside in (cur.finished, cur.foreign):
            gone = aside - snap
            aside -= gone
            cur.members -= gone
    return fresh


def _all_tasks_news(cur: Cursor, lives: dict[Any, set[Any]], out: Changes) -> list[Any]:
    """3.14+: the live tasks not held yet, from each loop's ``all_tasks``
    taken before the passes.  Every held task that survived the passes was
    live then (one that ended later was dropped by them), so a loop with as
    many live tasks as the cursor holds has the same ones.  Otherwise the
    held tasks, dereferenced, are taken out of ``all_tasks`` (sets of tasks:
    hashed by address, no Python runs): what remains is new (or ended
    since: the classification sees that), and if fewer were taken out than
    are held, some held task ended unseen."""
    fresh: list[Any] = []
    for st, live in lives.items():
        held = cur.held.get(st)
        if held is None:
            fresh += live
            continue
        if len(live) == len(held):
            continue
        new = live.difference(_chunked(_deref, held.all_refs()))
        if len(live) - len(new) != len(held):
            ids, refs = held.keep_only(live)
            out.removed += ids
            cur.members.difference_update(refs)
        fresh += new
    return fresh


def _ended_at(refs: list[Any], pos: list[int]) -> list[int]:
    """The positions among ``pos`` whose task is finished or freed."""
    if not pos:
        return []
    tasks = _chunked(lambda part: map(_call, map(refs.__getitem__, part)), pos)
    return list(compress(pos, _chunked(_done_flags, tasks)))


def _set_aside(cur: Cursor, refs: list[Any], in_weakset: bool) -> None:
    """Forget ended tasks, except that on 3.11–3.13 a finished task the
    program still references stays in the WeakSet: it is remembered as
    such, not to be taken for a new one, until it is freed."""
    for ref in refs:
        if in_weakset and ref() is not None:
            cur.finished.add(ref)
            cur.members.add(ref)
        else:
            cur.members.discard(ref)


def _keep_busy(passes: list[_Pass]) -> None:
    """Without ``stats`` nothing is sent for a task that ran: keep what was
    read, so that only its next step counts as moved."""
    for p in passes:
        busy = p.held.busy
        for i, value in zip(*p.still_running()):
            busy[i] = value


def _emit_changed(cur: Cursor, passes: list[_Pass], limit: int | None, out: Changes) -> None:
    """``changed`` entries for held tasks that ran, at most ``limit``, taken
    in rotation so that each gets its turn when more ran.  The busy time
    kept is the one read before ``done()``; an entry carries the current
    one, and where they differ the task is simply sent again next call."""
    cands = [(p.held, *p.still_running()) for p in passes]
    cands = [c for c in cands if c[1]]
    total = sum(len(c[1]) for c in cands)
    if not total:
        return
    cap = total if limit is None else min(limit, total)
    start = 0
    if cap < total:
        start = cur.rotation % total
        cur.rotation = start + cap
    ends = list(itertools.accumulate(len(c[1]) for c in cands))
    k = 0
    for g in sorted(itertools.islice(itertools.chain(range(start, total), range(start)), cap)):
        while g >= ends[k]:
            k += 1
        held, pos, values = cands[k]
        j = g - (ends[k] - len(pos))
        entry = _changed_entry(held.refs[pos[j]])
        if entry is not None:
            held.busy[pos[j]] = values[j]
            out.changed.append(entry)


def _changed_entry(ref: Any) -> str | None:
    task = ref()
    if task is None:
        return None
    first = task._ls_first
    return f'["0x{id(task):x}",{task._ls_steps},{task._ls_busy!r},{task._ls_longest!r},{"null" if first is None else repr(first)}]'


def _take_new(cur: Cursor, tasks: list[Any], refs: list[Any] | None, watched: dict[int, Any], timed: frozenset[type], limit: int | None, out: Changes) -> None:
    """Look at the tasks not seen before: freed ones (None) are ignored,
    finished ones and other loops' set aside, and the first ``limit`` live
    ones held, in address order; the rest are counted, and will be new
    again next call.  ``refs`` are the tasks' references from the WeakSet,
    or None (3.14+): then they are made only for the tasks held."""
    if not tasks:
        return
    busy = _chunked(_busy_any, tasks)  # before done(): see the module docstring
    done = _chunked(_done_flags, tasks)
    if any(done):
        if refs is not None:
            _set_aside(cur, list(compress(refs, done)), True)
        alive = list(map(_not, done))
        tasks, busy = list(compress(tasks, alive)), list(compress(busy, alive))
        refs = list(compress(refs, alive)) if refs is not None else None
    sts = _chunked(lambda part: map(watched.get, map(id, _loops_of(part))), tasks)
    other = list(map(_is, sts, repeat(None)))
    if any(other):
        if refs is not None:  # (all_tasks was asked for watched loops only)
            cur.foreign.update(compress(refs, other))
            cur.members.update(compress(refs, other))
        mine = list(map(_not, other))
        tasks, busy, sts = (list(compress(x, mine)) for x in (tasks, busy, sts))
        refs = list(compress(refs, mine)) if refs is not None else None
    take = len(tasks) if limit is None else min(limit, len(tasks))
    out.unsent.update(sts[take:])
    for i in _address_order(tasks, take):
        task, st, b = tasks[i], sts[i], busy[i]
        ref = refs[i] if refs is not None else weakref.ref(task)
        held = cur.held.get(st)
        if held is None:
            held = cur.held[st] = Held()
        held.add(ref, id(task), b, st.hooked and b is not None and type(task) in timed)
        cur.members.add(ref)
        out.new_tasks.append(task)
        out.new_states.append(st)
    for st, n in collections.Counter(sts[:take]).items():
        if n > CHUNK:
            cur.held[st].resort()
