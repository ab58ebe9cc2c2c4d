"""``tasks.delta`` (agent/mirror.py) against the truth, on the real Methods.

Calls are made from inside the monitored loop, between awaits, so each
test sees exactly the state it set up; the answers are applied to the
TUI's own ``Mirror`` and compared with ``asyncio.all_tasks``.  Every test
runs with both ways of finding tasks: asyncio's WeakSet (3.11–3.13) and
``all_tasks`` per loop (3.14+, forced here on older versions).  The
``all_tasks`` flow scans on every call here (``RESCAN_S = 0``), since many
tests make tasks without the factory; the scans it skips are tested on
their own (``test_all_tasks_scans_*``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import loopscope
from loopscope.agent import mirror
from loopscope.protocol import dumps_piecewise
from loopscope.tui.datasource import Mirror

FLOWS = ["weakset", "all_tasks"] if sys.version_info < (3, 14) else ["all_tasks"]


@pytest.fixture(params=FLOWS)
def agent(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param == "all_tasks":
        monkeypatch.setattr(mirror, "_asyncio_weakset", lambda: None)
        monkeypatch.setattr(mirror, "RESCAN_S", 0.0)
    with loopscope.installed(server=False, dump_signal="") as ag:
        yield ag


def run(agent: Any, body: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(body(agent.methods))


class Client:
    """A client of one cursor: the TUI's Mirror, fed by real answers."""

    def __init__(self, methods: Any, stats: bool = True, limit: int | None = None) -> None:
        self.methods = methods
        self.stats = stats
        self.limit = limit
        self.mirror = Mirror()
        self.last: dict[str, Any] = {}

    def call(self) -> dict[str, Any]:
        params: dict[str, Any] = {"cursor": self.mirror.cursor, "stats": self.stats}
        if self.limit is not None:
            params["limit"] = self.limit
        self.last = json.loads(dumps_piecewise(self.methods.tasks_delta(params)))  # as on the wire
        self.mirror.apply(self.last)
        return self.last

    def sync(self) -> int:
        """Call until nothing more is pending; the number of calls."""
        n = 1
        while self.call()["more"] or (self.stats and self.last["changed"] and self.limit):
            n += 1
            assert n < 1000
        return n

    def added(self) -> dict[str, dict[str, Any]]:
        cols = self.last["columns"]
        return {r[0]: dict(zip(cols, r)) for r in self.last["added"]}

    def check(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The mirror holds exactly the live tasks, each under its own name."""
        live = asyncio.all_tasks(loop)
        assert set(self.mirror.rows) == {hex(id(t)) for t in live}
        assert {r.name for r in self.mirror.rows.values()} == {t.get_name() for t in live}
        assert self.last["total"] == len(live)


async def idle(ev: asyncio.Event) -> None:
    await ev.wait()


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked", "untracked"])
def test_a_reused_address_is_a_new_task(agent: Any, tracked: bool) -> None:
    """A task freed and a new one made at the same address between two
    calls: the old id is removed and the new task added, even for tasks
    loopscope did not create (no creation time tells them apart)."""

    async def body(methods: Any) -> None:
        loop = asyncio.get_running_loop()
        n = 0

        def prepare() -> list[tuple[Any, asyncio.Event]]:
            events = [asyncio.Event() for _ in range(8)]
            return [(idle(ev), ev) for ev in events]

        def make(prepared: list[tuple[Any, asyncio.Event]]) -> list[tuple[asyncio.Task[Any], asyncio.Event]]:
            """Tasks first in line for the memory just freed (the coroutines
            and events were made before: on 3.11 they share its size class)."""
            nonlocal n
            out = []
            for coro, ev in prepared:
                n += 1
                task = asyncio.create_task(coro, name=f"gen-{n}") if tracked else asyncio.Task(coro, loop=loop, name=f"gen-{n}")
                out.append((task, ev))
            return out

        client = Client(methods)
        pool = make(prepare())
        await asyncio.sleep(0)
        client.call()
        for _ in range(100):
            old = {id(t) for t, _ev in pool}
            for ev in [e for _t, e in pool]:  # no loop variable keeps a task
                ev.set()
            await asyncio.sleep(0)
            assert all(t.done() for t, _ev in pool)
            refs = [weakref.ref(t) for t, _ev in pool]
            prepared = prepare()
            pool.clear()
            gc.collect()
            assert all(r() is None for r in refs)
            pool = make(prepared)
            await asyncio.sleep(0)
            d = client.call()
            assert {int(x, 16) for x in d["removed"]} == old
            client.check()  # a stale row at a reused address would have the old name
            reused = [t for t, _ev in pool if id(t) in old]
            if reused:
                for t in reused:
                    row = client.added()[hex(id(t))]
                    assert row["name"] == t.get_name() and (row["created"] is not None) == tracked
                break
        else:
            pytest.skip("no address was reused in 100 rounds")
        for ev in [e for _t, e in pool]:
            ev.set()
        await asyncio.gather(*(t for t, _ev in pool))

    run(agent, body)


def test_tasks_ended_and_started_between_calls(agent: Any) -> None:
    async def body(methods: Any) -> None:
        ev, stop = asyncio.Event(), asyncio.Event()
        keep = [asyncio.create_task(idle(ev), name=f"keep-{i}") for i in range(50)]
        short = [asyncio.create_task(idle(stop), name=f"short-{i}") for i in range(30)]
        await asyncio.sleep(0)
        client = Client(methods)
        client.call()
        client.check()
        held_short = {hex(id(t)) for t in short}
        stop.set()
        await asyncio.gather(*short)
        del short  # freed
        more = [asyncio.create_task(idle(ev), name=f"more-{i}") for i in range(20)]
        await asyncio.sleep(0)
        d = client.call()
        assert set(d["removed"]) == held_short
        assert {r["name"] for r in client.added().values()} == {t.get_name() for t in more}
        client.check()
        assert client.call()["added"] == [] and client.last["removed"] == []
        ev.set()
        await asyncio.gather(*keep, *more)

    run(agent, body)


@pytest.mark.parametrize("untracked", [False, True], ids=["tracked", "untracked"])
def test_finished_tasks_still_referenced_are_removed_once(agent: Any, untracked: bool) -> None:
    """A finished task the program keeps stays in asyncio's WeakSet: it is
    removed once, never sent again, and its eventual release is silent."""

    async def body(methods: Any) -> None:
        ev = asyncio.Event()
        loop = asyncio.get_running_loop()
        make = (lambda i: asyncio.Task(idle(ev), loop=loop, name=f"w-{i}")) if untracked else (lambda i: asyncio.create_task(idle(ev), name=f"w-{i}"))
        tasks = [make(i) for i in range(40)]
        await asyncio.sleep(0)
        client = Client(methods)
        client.call()
        ev.set()
        await asyncio.sleep(0)  # they finish; ``tasks`` still holds them
        assert all(t.done() for t in tasks)
        d = client.call()
        assert set(d["removed"]) == {hex(id(t)) for t in tasks}
        client.check()
        for _ in range(3):
            assert client.call()["added"] == [] and client.last["removed"] == []
        del tasks
        gc.collect()
        assert client.call()["added"] == [] and client.last["removed"] == []
        client.check()
        cur = methods._cursors[client.mirror.cursor]
        assert not cur.finished and len(cur.members) == len(asyncio.all_tasks())  # nothing kept once freed

    run(agent, body)


def test_an_end_the_busy_time_missed(agent: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A last step that left the busy time equal (as if timed at 0.0 s) on
    a task the program keeps: with ``all_tasks`` (3.14+) the count shows a
    task missing and it is removed at once; from the WeakSet the rotating
    done() sweep finds it within len/CHUNK calls (CHUNK made small here)."""
    monkeypatch.setattr(mirror, "CHUNK", 4)

    async def body(methods: Any) -> None:
        ev, other = asyncio.Event(), asyncio.Event()
        t = asyncio.create_task(idle(ev))
        rest = [asyncio.create_task(idle(other)) for _ in range(40)]
        await asyncio.sleep(0)
        client = Client(methods)
        client.call()
        before = t._ls_busy
        ev.set()
        await asyncio.sleep(0)
        assert t.done()
        t._ls_busy = before  # as if that last step had taken no time
        tid = hex(id(t))
        calls = 0
        while tid in client.mirror.rows:
            client.call()
            calls += 1
            assert calls <= 1 + 41 // 4
        if request.node.callspec.params["agent"] == "all_tasks":
            assert calls == 1
        client.check()
        other.set()
        await asyncio.gather(*rest)

    run(agent, body)


def test_tasks_of_two_loops(agent: Any) -> None:
    """A second loop in another thread: its tasks carry its loop id, their
    ends are seen, and when it closes its remaining tasks go too."""
    started, release, stop = threading.Event(), threading.Event(), threading.Event()
    other: dict[str, Any] = {}

    def second() -> None:
        async def main() -> None:
            ev, first = asyncio.Event(), asyncio.Event()
            other["loop"] = asyncio.get_running_loop()
            other["tasks"] = [asyncio.create_task(idle(first if i < 10 else ev), name=f"b-{i}") for i in range(25)]
            await asyncio.sleep(0)
            started.set()
            while not release.is_set():
                await asyncio.sleep(0.005)
            first.set()
            await asyncio.gather(*other["tasks"][:10])
            del other["tasks"][:10]
            release.clear()
            while not stop.is_set():
                await asyncio.sleep(0.005)

        asyncio.run(main())

    th = threading.Thread(target=second)
    th.start()
    try:

        async def body(methods: Any) -> None:
            ev = asyncio.Event()
            mine = [asyncio.create_task(idle(ev), name=f"a-{i}") for i in range(15)]
            await asyncio.sleep(0)
            assert started.wait(10)
            client = Client(methods)
            client.call()
            rows = client.mirror.rows
            theirs = {hex(id(t)) for t in other["tasks"]}
            b_loop = hex(id(other["loop"]))
            assert {r.loop_id for tid, r in rows.items() if tid in theirs} == {b_loop}
            assert {r.loop_id for tid, r in rows.items() if r.name.startswith("a-")} == {hex(id(asyncio.get_running_loop()))}
            assert client.last["total"] == len(asyncio.all_tasks()) + len(asyncio.all_tasks(other["loop"]))
            ended = {hex(id(t)) for t in other["tasks"][:10]}
            release.set()
            while release.is_set():
                await asyncio.sleep(0.005)
            d = client.call()
            assert set(d["removed"]) == ended
            stop.set()
            await asyncio.to_thread(th.join, 10)
            d = client.call()  # the second loop is closed: all its tasks leave
            assert {r.loop_id for r in client.mirror.rows.values()} == {hex(id(asyncio.get_running_loop()))}
            client.check()
            ev.set()
            await asyncio.gather(*mine)

        run(agent, body)
    finally:
        release.set()
        stop.set()
        th.join(10)


def test_limit_chunks_the_first_load(agent: Any) -> None:
    async def body(methods: Any) -> None:
        ev = asyncio.Event()
        tasks = [asyncio.create_task(idle(ev), name=f"t-{i}") for i in range(230)]
        await asyncio.sleep(0)
        client = Client(methods, limit=50)
        sizes = []
        while True:
            d = client.call()
            sizes.append(len(d["added"]))
            assert d["total"] == len(asyncio.all_tasks())
            if not d["more"]:
                break
        assert sizes[:4] == [50, 50, 50, 50] and sum(sizes) == len(asyncio.all_tasks())
        assert len(client.mirror.rows) == sum(sizes)  # nothing sent twice
        client.check()
        for t in tasks[:120]:
            t.cancel()
        await asyncio.sleep(0)
        d = client.call()
        assert set(d["removed"]) == {hex(id(t)) for t in tasks[:120]}  # ends are not limited
        client.check()
        ev.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    run(agent, body)


def test_changed_covers_every_task_that_ran_within_the_limit(agent: Any) -> None:
    async def tick(gate: asyncio.Queue[None]) -> None:
        while True:
            await gate.get()

    async def body(methods: Any) -> None:
        gates: list[asyncio.Queue[None]] = [asyncio.Queue() for _ in range(130)]
        tasks = [asyncio.create_task(tick(g), name=f"q-{i}") for i, g in enumerate(gates)]
        await asyncio.sleep(0)
        client = Client(methods, limit=40)
        client.sync()
        for g in gates:
            g.put_nowait(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        sent: list[str] = []
        for _ in range(5):
            d = client.call()
            assert len(d["changed"]) <= 40 and d["added"] == [] and d["removed"] == []
            sent += [c[0] for c in d["changed"]]
        # each once; the test's own task ran too
        assert sorted(sent) == sorted({hex(id(t)) for t in tasks} | {hex(id(asyncio.current_task()))})
        for t in tasks:
            r = client.mirror.rows[hex(id(t))]
            assert (r.steps, r.busy) == (t._ls_steps, t._ls_busy)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run(agent, body)


def test_rows_say_what_light_records_say(agent: Any) -> None:
    """``Introspector.row`` (a delta row, built without a record) and
    ``light`` (the record ``tasks.list`` uses) agree, column for column."""

    async def body(methods: Any) -> None:
        intro = agent.introspector
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()

        async def parent() -> asyncio.Task[None]:
            child = asyncio.create_task(idle(ev), name="child")
            await asyncio.sleep(0)
            return child

        p = asyncio.create_task(parent(), name="parent")
        child = await p
        untracked = asyncio.Task(idle(ev), loop=loop, name="untracked")
        cancelled = asyncio.create_task(idle(ev), name="cancelled")
        fresh = asyncio.create_task(idle(ev), name="not started")
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        me = asyncio.current_task()
        for t in (child, untracked, cancelled, me, p, fresh):
            info = intro.light(t, "L", me, time.monotonic())
            site = info.site
            columns = [info.id, info.name, info.coro, info.state, info.created, info.site_id, info.parent_id, info.parent_name, "L"]
            for stats in (False, True):
                expect = columns + ([info.steps, info.busy, info.longest, info.first_step] if stats else [])
                row, got_site = intro.row(t, "L", me, stats)
                assert row == expect, t.get_name()
                assert (got_site.label() if got_site is not None else None) == site
        assert {r.state for r in [intro.light(t, "L", me, 0.0) for t in (child, cancelled, me)]} == {"pending", "cancelled", "running"}
        ev.set()

    run(agent, body)


def test_answers_report_the_agents_cpu_time(agent: Any) -> None:
    async def body(methods: Any) -> None:
        ev = asyncio.Event()
        tasks = [asyncio.create_task(idle(ev)) for _ in range(200)]
        await asyncio.sleep(0)
        t0 = time.thread_time()
        d = methods.tasks_delta({"cursor": None, "stats": True})
        spent = time.thread_time() - t0
        assert isinstance(d["cpu"], float) and 0 < d["cpu"] <= spent
        ev.set()
        await asyncio.gather(*tasks)

    run(agent, body)


class SlowBackend:
    """Answers ``tasks.delta`` after 0.2 s, reporting ``cpu`` or not."""

    kind = "agent"
    label = "slow"
    hello = {"pid": 1, "loops": []}

    def __init__(self, cpu: float | None) -> None:
        self.cpu = cpu

    def call(self, method: str, params: dict[str, Any]) -> Any:
        time.sleep(0.2)
        answer: dict[str, Any] = {"cursor": "1", "reset": False, "more": False, "added": [], "removed": [], "sites": {}, "running": [], "total": 0, "loops": []}
        if self.cpu is not None:
            answer["cpu"] = self.cpu
        return answer

    def close(self) -> None:
        pass


def test_top_backs_off_from_what_the_call_cost_the_program() -> None:
    """The poller waits 20x the agent's CPU time for the answer, not the
    wall time (which counts waiting for the program's GIL); without ``cpu``
    (older agents, dumps), the wall time."""
    from loopscope.tui.datasource import TopData

    data = TopData(SlowBackend(0.003))
    data.refresh()
    assert data.last_call_s >= 0.2 and data.last_cost_s == 0.003
    data = TopData(SlowBackend(None))
    data.refresh()
    assert data.last_cost_s == data.last_call_s >= 0.2


def test_switching_stats_resets_the_cursor(agent: Any) -> None:
    async def body(methods: Any) -> None:
        ev = asyncio.Event()
        tasks = [asyncio.create_task(idle(ev)) for _ in range(10)]
        await asyncio.sleep(0)
        a = methods.tasks_delta({"cursor": None, "stats": True})
        b = methods.tasks_delta({"cursor": a["cursor"], "stats": True})
        c = methods.tasks_delta({"cursor": b["cursor"], "stats": False})
        a, b, c = (json.loads(dumps_piecewise(x)) for x in (a, b, c))
        assert not b["reset"] and b["added"] == []
        assert c["reset"] and len(c["added"]) == len(a["added"]) and "changed" not in c
        ev.set()
        await asyncio.gather(*tasks)

    run(agent, body)


@pytest.mark.parametrize("limit", [None, 7], ids=["no-limit", "limit"])
@pytest.mark.parametrize("chunk", [mirror.CHUNK, 8], ids=["chunk", "tiny-chunk"])
@pytest.mark.parametrize("stats", [True, False], ids=["stats", "no-stats"])
def test_random_churn_matches_asyncio(agent: Any, stats: bool, chunk: int, limit: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks created (through the factory or not), ended, cancelled, kept
    after their end, freed, over many rounds and with a small limit: after
    each round the mirror holds exactly the live tasks, with current step
    counters.  With a tiny CHUNK the same rounds cross slice boundaries,
    rotate the done() sweep, re-sort and compact the held lists."""
    monkeypatch.setattr(mirror, "CHUNK", chunk)
    rnd = random.Random(7)

    async def body(methods: Any) -> None:
        loop = asyncio.get_running_loop()
        live: list[tuple[asyncio.Task[Any], asyncio.Event]] = []
        kept: list[asyncio.Task[Any]] = []
        client = Client(methods, stats=stats, limit=limit)
        n = 0
        for _round in range(60):
            for _ in range(rnd.randrange(0, 25)):
                ev = asyncio.Event()
                n += 1
                task = asyncio.create_task(idle(ev), name=f"r{n}") if rnd.random() < 0.8 else asyncio.Task(idle(ev), loop=loop, name=f"u{n}")
                live.append((task, ev))
            rnd.shuffle(live)
            for _ in range(rnd.randrange(0, 1 + len(live) // 3)):
                task, ev = live.pop()
                if rnd.random() < 0.3:
                    task.cancel()
                else:
                    ev.set()
                if rnd.random() < 0.3:
                    kept.append(task)
            if kept and rnd.random() < 0.2:
                kept.clear()
            if rnd.random() < 0.3:
                gc.collect()
            await asyncio.sleep(0)
            client.sync()
            client.check()
            if stats:
                for task, _ev in live:
                    if hasattr(task, "_ls_steps"):
                        assert client.mirror.rows[hex(id(task))].steps == (task._ls_steps or None)
        for _task, ev in live:
            ev.set()
        await asyncio.sleep(0)

    run(agent, body)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``all_tasks`` flow as on 3.14+, its scans counted."""
    scans: list[Any] = []
    real = mirror.live_tasks

    def counted(loop: Any) -> Any:
        scans.append(loop)
        return real(loop)

    monkeypatch.setattr(mirror, "_asyncio_weakset", lambda: None)
    monkeypatch.setattr(mirror, "live_tasks", counted)
    with loopscope.installed(server=False, dump_signal="") as ag:
        yield ag, scans


def test_all_tasks_scans_only_when_the_factory_made_a_task(gated: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A steady call skips ``all_tasks`` (the ~25 ms of a 3.14 call at
    100,000 tasks); a task made through the factory brings the scan back
    at once, and ends are still seen without one."""
    agent, scans = gated
    monkeypatch.setattr(mirror, "RESCAN_S", 3600.0)

    async def body(methods: Any) -> None:
        ev = asyncio.Event()
        tasks = [asyncio.create_task(idle(ev), name=f"s{i}") for i in range(50)]
        await asyncio.sleep(0)
        client = Client(methods)
        client.call()
        client.check()
        assert len(scans) == 1
        for _ in range(5):
            client.call()
        assert len(scans) == 1 and client.last["added"] == [] and client.last["removed"] == []
        late = asyncio.create_task(idle(ev), name="late")
        await asyncio.sleep(0)
        client.call()
        assert len(scans) == 2 and set(client.added()) == {hex(id(late))}
        client.check()
        gone = tasks.pop()
        gone.cancel()
        await asyncio.sleep(0)
        client.call()
        assert len(scans) == 2 and client.last["removed"] == [hex(id(gone))]
        client.check()
        ev.set()
        await asyncio.gather(*tasks, late)

    run(agent, body)


def test_all_tasks_scans_find_tasks_made_without_the_factory_within_rescan_s(gated: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``asyncio.Task(...)`` called directly leaves no mark: such a task
    appears at the next scan, at most RESCAN_S later."""
    agent, scans = gated
    monkeypatch.setattr(mirror, "RESCAN_S", 0.3)

    async def body(methods: Any) -> None:
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        tasks = [asyncio.create_task(idle(ev)) for _ in range(5)]
        await asyncio.sleep(0)
        client = Client(methods)
        client.call()
        direct = asyncio.Task(idle(ev), loop=loop, name="direct")
        await asyncio.sleep(0)
        client.call()
        assert hex(id(direct)) not in client.mirror.rows and len(scans) == 1
        await asyncio.sleep(0.35)
        client.call()
        assert len(scans) == 2 and set(client.added()) == {hex(id(direct))}
        client.check()
        ev.set()
        await asyncio.gather(*tasks, direct)

    run(agent, body)


@pytest.mark.parametrize("limit", [None, 7], ids=["no-limit", "limit"])
def test_all_tasks_scans_skipped_still_match_asyncio(gated: Any, limit: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds of tasks made through the factory, ended, cancelled and kept,
    with some rounds making none (their calls skip the scan): after each
    round the mirror holds exactly the live tasks."""
    agent, scans = gated
    monkeypatch.setattr(mirror, "RESCAN_S", 3600.0)
    monkeypatch.setattr(mirror, "CHUNK", 8)
    rnd = random.Random(11)

    async def body(methods: Any) -> None:
        live: list[tuple[asyncio.Task[Any], asyncio.Event]] = []
        kept: list[asyncio.Task[Any]] = []
        client = Client(methods, limit=limit)
        calls = 0
        for n_round in range(60):
            if rnd.random() < 0.5:
                for i in range(rnd.randrange(1, 25)):
                    ev = asyncio.Event()
                    live.append((asyncio.create_task(idle(ev), name=f"r{n_round}-{i}"), ev))
            rnd.shuffle(live)
            for _ in range(rnd.randrange(0, 1 + len(live) // 4)):
                task, ev = live.pop()
                task.cancel() if rnd.random() < 0.3 else ev.set()
                if rnd.random() < 0.3:
                    kept.append(task)
            if kept and rnd.random() < 0.2:
                kept.clear()
            await asyncio.sleep(0)
            calls += client.sync()
            client.check()
        assert len(scans) < calls  # some calls did skip
        for _task, ev in live:
            ev.set()
        await asyncio.sleep(0)

    run(agent, body)
