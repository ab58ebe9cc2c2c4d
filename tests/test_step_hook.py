"""The step hook never harms the program, whatever state a task is in.

Every test runs against both step hooks: the compiled one
(agent/_speedups.c) and the Python one (agent/steps.py), which must do the
same thing.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

import loopscope
from loopscope.agent import core, steps


@pytest.fixture(params=[True, False], ids=["compiled", "python"])
def speedups(request: pytest.FixtureRequest) -> bool:
    if request.param and steps._speedups is None:
        pytest.skip("the compiled step hook was not built here (no C compiler when loopscope was installed)")
    return request.param


def test_a_task_with_broken_bookkeeping_still_runs_and_the_error_is_counted(speedups: bool):
    async def child() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> int:
        task = asyncio.create_task(child())
        del task._ls_created  # as if recording its origin had failed
        return await task

    with loopscope.installed(server=False, dump_signal="", speedups=speedups) as agent:
        before = agent.tracker.errors
        assert asyncio.run(main()) == 7
        assert agent.tracker.errors > before
        assert "AttributeError" in (agent.tracker.last_error or "")


def test_exceptions_from_callbacks_are_reported_like_asyncio_does(speedups: bool):
    seen: list[dict] = []

    def boom() -> None:
        raise ValueError("from a callback")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        loop.call_soon(boom)
        await asyncio.sleep(0.01)

    with loopscope.installed(server=False, dump_signal="", speedups=speedups) as agent:
        assert asyncio.events.Handle._run is agent.step_hook.fast
        assert (type(agent.step_hook.fast) is steps._speedups.StepRun) == speedups if steps._speedups else True
        asyncio.run(main())
    assert len(seen) == 1
    assert seen[0]["message"].startswith("Exception in callback ") and "boom" in seen[0]["message"]
    assert isinstance(seen[0]["exception"], ValueError)
    assert asyncio.events.Handle._run is steps._original_run  # uninstalled


def test_steps_are_timed_and_attributed_to_their_task(speedups: bool):
    async def worker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def main() -> tuple[int, float]:
        t = asyncio.create_task(worker())
        await t
        return t._ls_steps, t._ls_busy

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        n, busy = asyncio.run(main())
        assert n == 6 and busy > 0  # the first step and five wakeups
        assert core.current() is not None


def test_watchdog_sleeps_until_a_loop_could_be_late():
    """On a healthy, busy loop the watchdog wakes when a loop could first be
    late (next beat + half the slow-step threshold), not every ``watchdog``
    seconds: each wake-up takes the GIL from the loop.  Polling every 20 ms
    would be ~50 wake-ups in this second; beats every 50 ms allow ~10-20."""
    import asyncio
    import time

    import loopscope
    from loopscope.agent.watchdog import Watchdog

    polls = []
    original = Watchdog.poll

    def counting(self):  # noqa: ANN001, ANN202
        polls.append(time.monotonic())
        return original(self)

    async def busy() -> None:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            await asyncio.sleep(0)

    Watchdog.poll = counting
    try:
        with loopscope.installed(server=False, dump_signal="", watchdog=0.02, heartbeat=0.05, slow_step=0.1):
            asyncio.run(busy())
    finally:
        Watchdog.poll = original
    assert 3 <= len(polls) <= 30, len(polls)


def _workload_outcome(speedups: bool) -> dict:
    """Run a workload touching every branch of the step hook; return what
    it counted, with durations left out (they differ from run to run)."""
    import sys
    import time

    async def steps_n(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("fails")

    async def blocks() -> None:
        await asyncio.sleep(0)
        time.sleep(0.03)  # a blocking step, over slow_step

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        tasks = [asyncio.create_task(steps_n(k), name=f"steps-{k}") for k in range(4)]
        failing = asyncio.create_task(fails(), name="fails")
        blocking = asyncio.create_task(blocks(), name="blocks")
        early = asyncio.create_task(steps_n(3), name="early")
        early.cancel()  # before its first step
        late = asyncio.create_task(steps_n(1000), name="late")
        await asyncio.sleep(0)
        late.cancel()
        loop.call_soon(lambda: 1 / 0)  # an exception from a plain callback
        eager = None
        if sys.version_info >= (3, 12):
            loop.set_task_factory(asyncio.eager_task_factory)
            eager = asyncio.create_task(steps_n(2), name="eager")
            loop.set_task_factory(None)
        await asyncio.gather(*tasks, failing, blocking, early, late, *([eager] if eager else []), return_exceptions=True)
        await asyncio.sleep(0.01)
        m = loop._loopscope_metrics
        every = [*tasks, failing, blocking, early, late]
        return {
            "steps": {t.get_name(): t._ls_steps for t in every},
            "ends": (m.done, m.failed, m.cancelled),
            "slow": m.slow_count,
            "blocking_tasks": [b[2][1:] for b in m.blocking],  # (name, coroutine), no id
        }

    with loopscope.installed(server=False, dump_signal="", slow_step=0.02, speedups=speedups) as agent:
        out = asyncio.run(main())
        out["errors"] = agent.tracker.errors
        out["history"] = sorted((e[1], e[5]) for e in (*agent.tracker.failed, *agent.tracker.cancelled))
    return out


def test_the_compiled_and_the_python_hook_count_the_same():
    if steps._speedups is None:
        pytest.skip("the compiled step hook was not built here (no C compiler when loopscope was installed)")
    compiled, python = _workload_outcome(True), _workload_outcome(False)
    assert compiled == python
    # and what they agree on is right
    assert python["steps"] == {"steps-0": 1, "steps-1": 2, "steps-2": 3, "steps-3": 4, "fails": 2, "blocks": 2, "early": 1, "late": 2}
    assert python["errors"] == 0
    assert python["slow"] == 1 and python["blocking_tasks"][0][0] == "blocks"
    assert ("fails", "failed") in python["history"] and ("early", "cancelled") in python["history"]


def test_a_loop_without_metrics_runs_its_callbacks_the_asyncio_way(speedups: bool):
    ran: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        del loop._loopscope_metrics  # as on a loop the agent does not watch
        loop.call_soon(ran.append, 1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        asyncio.run(main())
    assert ran == [1]


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_systemexit_and_keyboardinterrupt_still_stop_the_loop(speedups: bool, exc: type):
    def stop() -> None:
        raise exc()

    async def main() -> None:
        asyncio.get_running_loop().call_soon(stop)
        await asyncio.sleep(1)

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        with pytest.raises(exc):
            asyncio.run(main())


def test_ci_builds_the_compiled_hook():
    """.ci/run sets LOOPSCOPE_REQUIRE_SPEEDUPS: there, a build that silently
    fell back to the Python hook (missing headers, say) is a failure."""
    if os.environ.get("LOOPSCOPE_REQUIRE_SPEEDUPS") != "1":
        pytest.skip("the compiled step hook is optional outside CI (.ci/run requires it)")
    assert steps._speedups is not None


def _local_functions(path: str) -> set[str]:
    """Names of the file-local functions in an ELF64 little-endian shared
    object's symbol table (empty for anything else)."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x7fELF\x02\x01":
        return set()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for _, kind, _, _, off, size, link, _, _, entsize in sections:
        if kind != 2 or not entsize:  # SHT_SYMTAB
            continue
        stroff = sections[link][4]
        for pos in range(off, off + size, entsize):
            name, info = struct.unpack_from("<IB", data, pos)
            if info == 0x02:  # STB_LOCAL, STT_FUNC
                names.add(data[stroff + name : data.index(b"\0", stroff + name)].decode())
    return names


#: Static inline functions of Python's headers that _speedups.c uses and
#: that only an unoptimised build keeps as functions of their own.  (Not
#: ``Py_DECREF``/``Py_XDECREF``: at -O2 GCC may keep one shared copy of
#: those when a file calls them in enough places, as it did for
#: ``Py_XDECREF`` on 3.14 once the step hook remembered loops.)
OUT_OF_LINE_AT_O0 = {"Py_INCREF", "Py_TYPE", "_Py_TYPE", "Py_IS_TYPE", "Py_SIZE", "PyTuple_GET_SIZE", "PyFloat_AS_DOUBLE"}


def test_the_compiled_parts_are_built_optimised():
    """setuptools takes ``$CFLAGS`` *instead of* Python's own flags, so a
    ``CFLAGS=-I...`` build ran the hot paths at -O0, several times slower
    (``setup.py`` now adds -O2 when ``$CFLAGS`` names no level).  Unoptimised,
    GCC leaves a copy of every ``static inline`` function of Python's
    headers it used (``Py_INCREF`` on 3.11, ``_Py_TYPE`` and ``Py_XDECREF``
    on 3.14, where CI's sid builds were found at -O0): none of those that
    an optimised build always inlines may be there."""
    if steps._speedups is None:
        pytest.skip("the compiled parts are not built here (optional outside CI)")
    local = _local_functions(steps._speedups.__file__)
    if not local:
        pytest.skip("not an ELF shared object with a symbol table (stripped, or not Linux)")
    assert not local & OUT_OF_LINE_AT_O0, sorted(local)


def _plt_calls(path: str) -> int | None:
    """How many functions an ELF64 little-endian shared object calls through
    its PLT (the entries of ``.rela.plt``); None for anything else."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x7fELF\x02\x01":
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][4]
    for name, _, _, _, _, size, _, _, _, entsize in sections:
        if data[names + name : data.index(b"\0", names + name)] == b".rela.plt":
            return size // (entsize or 24)
    return 0


def test_the_compiled_parts_call_python_without_a_plt():
    """``setup.py`` builds the extension with ``-fno-plt`` on Linux: a stub
    per libpython function called cost an aiohttp request ~100 more
    instruction-cache misses (BENCHMARKS.md, seventeenth session).  Built
    without it, the extension has a PLT entry for each of some 80 functions
    it calls; with it, only what the C runtime's own start-up code calls."""
    if steps._speedups is None:
        pytest.skip("the compiled parts are not built here (optional outside CI)")
    if not sys.platform.startswith("linux"):
        pytest.skip("-fno-plt is given on Linux only")
    calls = _plt_calls(steps._speedups.__file__)
    if calls is None:
        pytest.skip("not an ELF64 shared object")
    assert calls < 10, calls


@pytest.mark.skipif(steps._speedups is None, reason="the compiled parts were not built here (no C compiler when loopscope was installed)")
def test_the_loop_metrics_hot_numbers_read_and_write_as_python_numbers(monkeypatch: pytest.MonkeyPatch):
    """busy, nested and done are C fields of LoopMetrics's compiled base
    (``_speedups.MetricsCore``): from Python they are the float, float and
    int the slots were, and a wrong type is refused as a slot's reader
    would expect, not stored."""
    from loopscope.agent.metrics import LoopMetrics

    m = LoopMetrics(slow=0.1)
    assert isinstance(m, steps._speedups.MetricsCore)
    assert (m.busy, m.nested, m.done) == (0.0, 0.0, 0)
    m.busy += 0.25
    m.done += 2
    m.nested = 1  # an int is taken as a float, as the slot's readers expect
    assert (m.busy, m.nested, m.done) == (0.25, 1.0, 2) and type(m.nested) is float and type(m.done) is int
    with pytest.raises(TypeError):
        m.done = "many"
    with pytest.raises(TypeError):
        m.busy = None
    assert (m.busy, m.done) == (0.25, 2)

    class SlotsOnly:  # the compiled parts write those fields at fixed offsets: another layout is refused
        __slots__ = ("fine", "counts", "step_max", "slow", "busy", "nested", "done")

    with loopscope.installed(server=False, dump_signal="") as agent:
        monkeypatch.setattr(steps, "LoopMetrics", SlotsOnly)
        with pytest.raises(TypeError, match="MetricsCore"):
            steps._compiled_run(agent.tracker)


def test_the_hook_leaks_no_objects_per_step(speedups: bool):
    """A reference kept per step (a float, a task, an exception) would show
    as tens of thousands of blocks after 40,000 steps."""
    import gc
    import sys

    async def worker(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError

    async def main(rounds: int) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, _ctx: None)
        for _ in range(rounds):
            await asyncio.gather(*[asyncio.create_task(worker(20)) for _ in range(100)], failing(), return_exceptions=True)

    with loopscope.installed(server=False, dump_signal="", history_size=10, speedups=speedups):
        asyncio.run(main(2))  # warm-up: caches, interned sites, the history rings
        gc.collect()
        before = sys.getallocatedblocks()
        asyncio.run(main(20))  # 20 x 100 tasks x 21 steps: 42,000 steps
        gc.collect()
        grown = sys.getallocatedblocks() - before
    assert grown < 4000, grown


def test_the_watchdogs_capture_keeps_no_task_alive():
    """An iteration made slow by many short steps gets a capture of the
    stack and the task then running, which no long step claims; it stays
    until the next capture and must not keep that task alive."""
    import gc
    import time
    import weakref

    async def short() -> None:
        time.sleep(0.0005)

    async def main(agent) -> list[weakref.ref]:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(short()) for _ in range(600)]  # one iteration of ~0.3 s
        refs = [weakref.ref(t) for t in tasks]
        await asyncio.gather(*tasks)
        m = loop._loopscope_metrics
        assert m.block_capture is not None, "the watchdog should have captured the slow iteration"
        del tasks
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        assert m.block_capture is not None  # still there: unclaimed
        return refs

    with loopscope.installed(server=False, dump_signal="none", slow_step=0.1, watchdog=0.01) as agent:
        refs = asyncio.run(main(agent))
    assert not [r for r in refs if r() is not None]


def _filed(m: object) -> int:
    """Steps filed in a loop's histogram."""
    return sum(list(m.fine)) + sum(list(m.counts))  # type: ignore[attr-defined]


def test_each_loop_steps_are_filed_in_its_own_metrics(speedups: bool):
    """The compiled hook remembers the last loops' metrics (with a weak
    reference to each loop, and forgets them when the agent attaches a
    loop): every loop run one after another gets its own, and a finished
    loop's metrics get nothing more."""
    import gc

    async def main(n: int) -> object:
        for _ in range(n):
            await asyncio.sleep(0)
        return asyncio.get_running_loop()._loopscope_metrics  # type: ignore[attr-defined]

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        seen: list[tuple[object, int]] = []
        for n in (50, 80, 120):
            m = asyncio.run(main(n))
            gc.collect()
            seen.append((m, _filed(m)))
        for (m, filed), n in zip(seen, (50, 80, 120)):
            assert n <= filed < n + 30, (n, filed)
            assert _filed(m) == filed  # nothing filed after its loop ended
        assert len({id(m) for m, _ in seen}) == 3


def test_a_step_never_changes_a_number_a_reader_holds(speedups: bool):
    """The compiled hook updates a task's busy time in place when nothing
    else holds the float: a value read from the task must stay what it was."""

    async def worker() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def main() -> None:
        t = asyncio.create_task(worker())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        held, steps = t._ls_busy, t._ls_steps  # type: ignore[attr-defined]
        text = repr(held)
        await t
        assert t._ls_steps > steps  # type: ignore[attr-defined]
        assert t._ls_busy > held  # type: ignore[attr-defined]
        assert repr(held) == text

    with loopscope.installed(server=False, dump_signal="", speedups=speedups):
        asyncio.run(main())


@pytest.mark.skipif(steps._speedups is None, reason="the compiled parts were not built here (no C compiler when loopscope was installed)")
def test_the_compiled_histogram_buckets_behave_as_a_list_of_ints():
    counts = steps._speedups.Counts(4)
    assert list(counts) == [0, 0, 0, 0] and len(counts) == 4
    counts[1] += 3
    counts[-1] = 2**40
    assert list(counts) == [0, 3, 0, 2**40] and counts[3] == 2**40
    with pytest.raises(IndexError):
        counts[4]
    with pytest.raises(IndexError):
        counts[4] = 1
    with pytest.raises(OverflowError):
        counts[0] = -1
    with pytest.raises(TypeError):
        del counts[0]
    with pytest.raises(ValueError):
        steps._speedups.Counts(-1)


@pytest.mark.skipif(steps._speedups is None, reason="the compiled parts were not built here (no C compiler when loopscope was installed)")
@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's asyncio.Task is a static type: its methods look no module up")
def test_our_task_classes_name_asyncios_module_as_their_own():
    """asyncio's C task methods find their module with
    PyType_GetModuleByDef(type(task)); our classes name the very module the
    walk up their MRO would find, so the lookup ends at the task's class."""
    import ctypes

    get_module = ctypes.pythonapi.PyType_GetModule
    get_module.restype, get_module.argtypes = ctypes.py_object, [ctypes.py_object]
    asyncio_module = get_module(asyncio.Task)

    async def main() -> list[type]:
        plain = asyncio.create_task(asyncio.sleep(0))
        eager = asyncio.get_running_loop().create_task(asyncio.sleep(0), eager_start=True) if sys.version_info >= (3, 14) else plain
        await asyncio.gather(plain, eager)
        return [type(plain), type(eager)]

    with loopscope.installed(server=False, dump_signal="") as agent:
        classes = asyncio.run(main())
        classes += [agent.tracker.task_class, agent.tracker.eager_task_class, agent.tracker.del_task_class]
        for cls in classes:
            assert get_module(cls) is asyncio_module, cls.__mro__
            assert cls.__mro__[-3] is asyncio.Task
