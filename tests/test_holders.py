"""Holders of Locks and Semaphores, recorded by asyncio's own acquire/release
(recompiled with a few statements, agent/primitives.py), in this process."""

from __future__ import annotations

import asyncio
import linecache
import sys
import traceback
from asyncio import locks
from collections.abc import Iterator

import pytest

import loopscope
from loopscope.agent import primitives as P

ORIGINAL = {(cls, name): cls.__dict__[name].__code__ for cls in (locks.Lock, locks.Semaphore) for name in ("acquire", "release")}


@pytest.fixture
def agent() -> Iterator[object]:
    with loopscope.installed(server=False, dump_signal="") as ag:
        yield ag


def holder(obj: object) -> tuple[list[object], bool]:
    """The holding tasks (None for one that is gone) and whether that is all."""
    hs, known = P.holders_of(obj)
    return [h[0] for h in hs], known


def test_methods_keep_their_identity_and_get_their_code_back(agent):
    assert agent.primitive_tracker.holders_via == {"Lock": "code", "Semaphore": "code"}
    for (cls, name), code in ORIGINAL.items():
        func = cls.__dict__[name]
        assert func.__code__ is not code
        new = func.__code__
        assert (new.co_qualname, new.co_filename, new.co_firstlineno) == (code.co_qualname, code.co_filename, code.co_firstlineno)
    loopscope.uninstall()
    for (cls, name), code in ORIGINAL.items():
        assert cls.__dict__[name].__code__ is code


def test_lock_holder_on_the_fast_and_the_slow_path(agent):
    async def main() -> None:
        lock = asyncio.Lock()
        seen: dict[str, object] = {}

        async def first() -> None:
            async with lock:
                seen["first"] = holder(lock)
                await asyncio.sleep(0.01)

        async def second() -> None:
            await asyncio.sleep(0)
            async with lock:  # waits: acquired when woken
                seen["second"] = holder(lock)
                seen["since"] = P.holders_of(lock)[0][0][1]

        a = asyncio.create_task(first())
        b = asyncio.create_task(second())
        await asyncio.sleep(0.005)
        waiting_since_before = P._monotonic()  # b has been waiting for a while
        await asyncio.gather(a, b)
        assert seen["first"] == ([a], True)
        assert seen["second"] == ([b], True)
        assert seen["since"] > waiting_since_before  # since it got the lock, not since it asked
        assert holder(lock) == ([], True) and lock._ls_holder is None

    asyncio.run(main())


def test_condition_made_before_the_agent_records_its_holder():
    """A Condition binds its lock's acquire when it is made: the function
    object must stay the same for a Condition made earlier to be seen."""
    cond = asyncio.Condition()
    with loopscope.installed(server=False, dump_signal=""):

        async def main() -> None:
            async with cond:
                assert holder(cond) == ([asyncio.current_task()], True)
            assert holder(cond) == ([], True)

        asyncio.run(main())


def test_semaphore_woken_waiter_owns_its_permit_before_it_runs(agent):
    async def main() -> None:
        sem = asyncio.BoundedSemaphore(1)
        order: list[str] = []
        go = asyncio.Event()

        async def waiter() -> None:
            async with sem:
                order.append("waiter")
                await go.wait()

        await sem.acquire()
        me = asyncio.current_task()
        assert holder(sem) == ([me], True)
        w = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the waiter is queued
        sem.release()
        # the permit went to the waiter's future; the waiter has not run yet
        assert sem._value == 0 and order == []
        assert holder(sem) == ([], True)
        await asyncio.sleep(0)
        assert order == ["waiter"] and holder(sem) == ([w], True)
        go.set()
        await w
        assert holder(sem) == ([], True)

    asyncio.run(main())


def test_semaphore_released_by_another_task_drops_the_oldest_holder(agent):
    async def main() -> None:
        sem = asyncio.Semaphore(2)
        got = asyncio.Event()

        async def take() -> None:
            await sem.acquire()
            got.set()
            await asyncio.sleep(1)

        t = asyncio.create_task(take())
        await got.wait()
        await sem.acquire()
        me = asyncio.current_task()
        assert set(holder(sem)[0]) == {t, me}
        sem.release()  # mine
        assert holder(sem)[0] == [t]
        sem.release()  # not t's own release: t's entry goes all the same
        assert holder(sem)[0] == []
        t.cancel()

    asyncio.run(main())


def test_semaphore_holders_are_bounded(agent):
    async def main() -> None:
        sem = asyncio.Semaphore(1000)

        async def keep() -> None:
            await sem.acquire()  # never released

        await asyncio.gather(*(asyncio.create_task(keep()) for _ in range(P.MAX_HOLDERS + 10)))
        hs, _known = P.holders_of(sem)
        assert len(hs) == P.MAX_HOLDERS
        assert all(t is None or t.done() for t, _s, _i in hs)

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_an_eager_task_holds_what_it_took_in_its_first_step(agent):
    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        lock, sem = asyncio.Lock(), asyncio.Semaphore(1)

        async def grab() -> None:
            await lock.acquire()
            await sem.acquire()
            await asyncio.sleep(0.01)

        t = asyncio.create_task(grab())  # runs up to its sleep inside create_task
        assert holder(lock) == ([t], True) and holder(sem)[0] == [t]
        await t

    asyncio.run(main())


def test_outside_a_task_nothing_raises_and_nothing_is_counted(agent):
    before = agent.tracker.errors
    lock = asyncio.Lock()
    coro = lock.acquire()
    with pytest.raises(StopIteration):
        coro.send(None)  # acquired outside any loop
    assert lock.locked() and holder(lock) == ([], False)
    lock.release()
    sem = asyncio.Semaphore(1)

    async def take() -> None:
        await sem.acquire()

    asyncio.run(take())
    assert len(holder(sem)[0]) == 1
    sem.release()  # from synchronous code, no loop
    assert holder(sem)[0] == [] and sem._value == 1
    assert agent.tracker.errors == before, agent.tracker.last_error


def test_an_error_while_recording_is_counted_not_raised(agent, monkeypatch):
    def broken(obj: object) -> None:
        raise ValueError("no weak references today")

    monkeypatch.setattr(P, "_ref", broken)
    before = agent.tracker.errors

    async def main() -> None:
        lock, sem = asyncio.Lock(), asyncio.Semaphore(1)
        async with lock, sem:
            assert holder(lock) == ([], False)

    asyncio.run(main())
    assert agent.tracker.errors >= before + 2
    assert "no weak references today" in (agent.tracker.last_error or "")


def test_a_task_waiting_in_acquire_across_uninstall_carries_on():
    async def main() -> list[str]:
        lock = asyncio.Lock()
        done: list[str] = []

        async def waiter() -> None:
            async with lock:
                done.append("waiter")

        with loopscope.installed(server=False, dump_signal=""):
            await lock.acquire()
            w = asyncio.create_task(waiter())
            await asyncio.sleep(0)  # suspended inside the recompiled acquire
        assert locks.Lock.acquire.__code__ is ORIGINAL[(locks.Lock, "acquire")]
        lock.release()
        await w
        return done

    assert asyncio.run(main()) == ["waiter"]


def test_tracebacks_through_acquire_show_asyncios_lines(agent):
    async def main() -> traceback.StackSummary:
        lock = asyncio.Lock()
        await lock.acquire()
        t = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError as e:
            return traceback.extract_tb(e.__traceback__)
        raise AssertionError("not cancelled")

    frames = [f for f in asyncio.run(main()) if f.filename == locks.__file__]
    assert frames and frames[-1].name == "acquire" and frames[-1].line == "await fut"


def test_without_asyncios_source_descriptors_record_holders(monkeypatch):
    real = linecache.getlines
    monkeypatch.setattr(linecache, "getlines", lambda filename, *a: [] if filename == locks.__file__ else real(filename, *a))
    with loopscope.installed(server=False, dump_signal="") as ag:
        assert ag.primitive_tracker.holders_via == {"Lock": "descriptor", "Semaphore": "descriptor"}
        assert locks.Lock.acquire.__code__ is ORIGINAL[(locks.Lock, "acquire")]

        async def main() -> None:
            lock, sem = asyncio.Lock(), asyncio.BoundedSemaphore(1)
            async with lock, sem:
                me = asyncio.current_task()
                assert holder(lock) == ([me], True) and holder(sem) == ([me], True)

                async def other() -> None:
                    async with lock:
                        assert holder(lock)[0] == [asyncio.current_task()]

                t = asyncio.create_task(other())
                await asyncio.sleep(0)
            await t
            assert holder(lock) == ([], True) and holder(sem) == ([], True)

        asyncio.run(main())
    assert "_locked" not in locks.Lock.__dict__ and "_value" not in locks.Semaphore.__dict__


class Gate:
    """Stands in for an asyncio class: its source is at hand, like asyncio's."""

    _open = False

    async def acquire(self) -> bool:
        if self._open:
            return True
        await asyncio.sleep(0)
        return True

    async def peek(self) -> bool:
        if self._open:
            return False
        return True


def test_statements_go_only_where_every_return_is_an_acquisition():
    where = lambda self_name: P._at_return_true  # noqa: E731
    code = P.rewritten(Gate.acquire, "{self}._seen = True", where)
    assert code is not None and code.co_qualname == "Gate.acquire"
    assert "_seen" in code.co_names and "_seen" not in Gate.acquire.__code__.co_names
    assert P.rewritten(Gate.peek, "{self}._seen = True", where) is None  # a return False: refused


def test_a_method_that_is_not_its_source_is_left_alone():
    """As if the file had changed since it was imported (or the method
    were someone else's patch): compiled again, it would not be the same."""

    async def acquire(self: object) -> bool:
        return True

    code = Gate.acquire.__code__
    acquire.__code__ = code.replace(co_names=tuple("_closed" if n == "_open" else n for n in code.co_names))
    where = lambda self_name: P._at_return_true  # noqa: E731
    assert P.rewritten(acquire, "{self}._seen = True", where) is None
    assert P.rewritten(Gate.acquire, "{self}._seen = True", where) is not None


def test_a_callers_verdict_is_remembered_and_forgotten_with_the_library_dirs(agent, tmp_path):
    """A primitive made straight from user code is recorded by the wrapped
    ``__init__`` from the remembered verdict (no walk) with the same record
    as the walk gives; asyncio's own primitives still are not listed; a
    directory that becomes a library's is judged again."""
    pt = agent.primitive_tracker

    def make() -> asyncio.Event:
        return asyncio.Event()  # made here

    line = next(i for i, text in enumerate(open(__file__), 1) if text.rstrip().endswith("# made here"))
    first, second = make(), make()
    assert P._user_callers.get(id(make.__code__)) is make.__code__
    for ev in (first, second):
        kind, code, lasti, _created = pt.objects.get(ev)
        assert (kind, code) == ("Event", make.__code__)
        assert next(ln for start, end, ln in code.co_lines() if start <= lasti < end) == line
    queue = asyncio.Queue()
    cond = asyncio.Condition()
    assert queue in pt.objects and cond in pt.objects and cond._lock not in pt.objects

    # the same function, now inside a library directory: not a creation site
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mod.py").write_text("import asyncio\n\ndef make():\n    return asyncio.Event()\n")
    ns: dict[str, object] = {}
    exec(compile((lib / "mod.py").read_text(), str(lib / "mod.py"), "exec"), ns)
    lib_make = ns["make"]
    assert lib_make() in pt.objects  # user code so far: remembered
    assert P._user_callers.get(id(lib_make.__code__)) is lib_make.__code__
    before = P.LIBRARY_DIRS
    try:
        P.add_library_dir(str(lib) + "/")
        assert P._user_callers == {}
        # made by a library's own code: its internals, not listed (janus's
        # Conditions, say), where the remembered verdict would list it
        assert lib_make() not in pt.objects
        assert make() in pt.objects
    finally:
        P.LIBRARY_DIRS = before
        P._user_callers.clear()


def test_the_compiled_and_the_python_constructor_record_the_same():
    """The wrapped ``__init__`` exists compiled (_speedups.PrimInit) and in
    Python; both must list the same objects at the same lines, including a
    subclass that calls ``super().__init__()`` and what asyncio makes for
    itself (not listed)."""
    if P._speedups is None:
        pytest.skip("the compiled parts were not built here (no C compiler when loopscope was installed)")

    class MyLock(asyncio.Lock):
        def __init__(self) -> None:
            super().__init__()  # a subclass's chain
            self.tag = "mine"

    def make() -> list:
        return [asyncio.Event(), asyncio.Event(), MyLock(), asyncio.Queue(), asyncio.Condition(), asyncio.Semaphore(2)]

    def where(code, lasti) -> int | None:
        return None if code is None else next((ln for s, e, ln in code.co_lines() if s <= lasti < e), None)

    seen = {}
    for compiled in (True, False):
        with loopscope.installed(server=False, dump_signal="", speedups=compiled) as ag:
            assert (type(locks.Event.__dict__["__init__"]) is P._speedups.PrimInit) == compiled
            pt = ag.primitive_tracker
            objs = make()
            records = []
            for o in objs:
                kind, code, lasti, _t = pt.objects.get(o)
                records.append((kind, code.co_name, where(code, lasti)))
            records.append(objs[4]._lock in pt.objects)
            assert objs[2].tag == "mine"
            seen[compiled] = records
            P._user_callers.clear()
    assert seen[True] == seen[False]
    assert seen[True][0][:2] == ("Event", "make") and seen[True][-1] is False


def test_one_sites_primitives_share_their_offsets_int(agent):
    """The compiled constructor keeps a site's offset as one int object
    (PrimInit's lasti cache): CPython caches no int above 256, so without it
    every record would make its own.  The site here is placed past offset
    256 on purpose, and each record must still name its line."""
    if P._speedups is None:
        pytest.skip("the compiled parts were not built here (no C compiler when loopscope was installed)")
    pad = "\n".join(f"    v{i} = {i}" for i in range(80))
    # a loop, not a comprehension: 3.11 runs a comprehension as a function
    # of its own, whose offsets are small
    src = (
        f"def make(asyncio):\n{pad}\n    out = []\n    for _ in range(3):\n        out.append(asyncio.Event())\n"
        "    out.append(asyncio.Event())\n    return out\n"
    )
    ns: dict = {}
    exec(compile(src, "<padded>", "exec"), ns)
    pt = agent.primitive_tracker
    objs = ns["make"](asyncio)
    ns["make"](asyncio)  # once more: the second call's creator is a known user caller (the compiled path)
    objs = ns["make"](asyncio)
    records = [pt.objects.get(o) for o in objs]
    assert all(r is not None and r[0] == "Event" for r in records)
    lastis = [r[2] for r in records]
    assert min(lastis) > 256, lastis  # past CPython's small ints, or this proves nothing
    assert lastis[0] is lastis[1] is lastis[2]  # one site: one int
    assert lastis[3] != lastis[0]  # another site: its own offset
    code = records[0][1]
    lines = [next(ln for s, e, ln in code.co_lines() if s <= lasti < e) for lasti in lastis]
    assert lines == [84, 84, 84, 85]  # the loop's line, then the line after it
