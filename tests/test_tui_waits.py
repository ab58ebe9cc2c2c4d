"""``loopscope top``: busy/switches columns, Health on real data, and the
"what waits for what" screens (Primitives, Groups, Async generators,
Deadlocks), against the fake backend and against real scenario processes
(live agent and dump file)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from conftest import wait_until, where
from test_tui import drive, names, settle, table_items
from tui_fake import NOW, FakeBackend, make_tasks

from loopscope.tui.app import TopApp
from loopscope.tui.datasource import AgentBackend, DumpBackend, Row, RowFilter, TopData, select
from loopscope.tui.screens.waits import cycle_path

RAW = make_tasks()
I_STEPS, I_BUSY = 9, 10
DL = "deadlock_locks.py"


def _key(r: list[Any], i: int) -> float:
    return -1.0 if r[i] is None else r[i]


def _sorted_by(i: int, reverse: bool = True) -> list[str]:
    """Largest first; tasks that never ran (None) after every measured one;
    ties keep the mirror's (arrival) order: a stable sort."""
    return [r[1] for r in sorted(RAW, key=lambda r: _key(r, i), reverse=reverse)]


async def tab(pilot: Any, app: TopApp, key: str) -> None:
    await pilot.press(key)
    await settle(pilot, app)
    for _ in range(50):  # the pane's own fetch worker
        await app.workers.wait_for_complete()
        await pilot.pause()
        pane = app.screen.active_pane
        if getattr(pane, "data", None) is not None or getattr(pane, "error", None):
            return
    raise AssertionError(f"tab {key} got no data")


def body(app: TopApp, wid: str) -> str:
    return str(app.screen.query_one(wid).render())


# -- busy / switches --------------------------------------------------------------------------


def test_busy_and_switches_columns_sort_busiest_first():
    async def steps(pilot, app):
        header = app.screen.query_one("#tasks").visible_text()[0]
        x = header.index("BUSY")
        await pilot.click("#tasks", offset=(x + 1, 0))
        await settle(pilot, app)
        by_busy = names(table_items(app))
        first_line = app.screen.query_one("#tasks").visible_text()[1]
        await pilot.click("#tasks", offset=(header.index("SWITCHES") + 1, 0))
        await settle(pilot, app)
        by_switches = names(table_items(app))
        await pilot.press("r")
        await settle(pilot, app)
        return header, by_busy, first_line, by_switches, names(table_items(app))

    header, by_busy, first_line, by_switches, least = drive(FakeBackend(), steps)
    assert "BUSY" in header and "SWITCHES" in header
    assert by_busy == _sorted_by(I_BUSY)
    busiest = max((r for r in RAW if r[I_BUSY] is not None), key=lambda r: r[I_BUSY])
    assert by_busy[0] == busiest[1]
    assert f"{busiest[I_BUSY] * 1000:.1f}ms" in first_line and f" {busiest[I_STEPS]} " in first_line
    assert by_switches == _sorted_by(I_STEPS)
    assert least == _sorted_by(I_STEPS, reverse=False)  # r: fewest switches first


def test_changed_busy_values_reorder_the_busy_sort():
    backend = FakeBackend()

    async def steps(pilot, app):
        app.screen.query_one("#tasks-pane").set_sort("busy")
        await settle(pilot, app)
        before = names(table_items(app))
        quiet = min((r for r in RAW if r[I_BUSY] is not None), key=lambda r: r[I_BUSY])
        backend.changes = [[quiet[0], 999, 42.0, 3.0, 0.001]]
        app.poll()
        await settle(pilot, app)
        for _ in range(20):
            await app.workers.wait_for_complete()
            await pilot.pause()
        return before, names(table_items(app)), quiet[1], app.screen.query_one("#tasks").visible_text()[1]

    before, after, quiet, line = drive(backend, steps)
    assert before[0] != quiet and after[0] == quiet
    assert "42.00s" in line and "999" in line


def test_busy_filter_and_uses_stats():
    flt = RowFilter.parse("busy=10ms")
    assert flt.uses_stats
    rows = [Row(r[0], r[1], r[2], r[3], r[4], None, None, "l", r[9], r[10], r[11], r[12]) for r in RAW]
    got = [r.name for r in select(rows, flt, "name", NOW)]
    assert got == sorted(r[1] for r in RAW if r[I_BUSY] is not None and r[I_BUSY] >= 0.010)


def test_sort_by_busy_on_100k_rows_within_budget():
    raw = make_tasks(100_000)
    rows = [Row(r[0], r[1], r[2], r[3], r[4], None, None, "l", r[9], r[10], r[11], r[12]) for r in raw]
    best = {}
    for key in ("busy", "switches", "-busy"):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = select(rows, RowFilter(), key, NOW)
            times.append(time.perf_counter() - t0)
        best[key] = min(times)
        assert len(out) == len(rows)
    assert select(rows, RowFilter(), "busy", NOW)[0].busy == max(r.busy for r in rows if r.busy is not None)
    assert max(best.values()) <= 0.150, best


# -- the wait screens on fixed data --------------------------------------------------------------


def test_primitives_screen_lists_holders_and_waiters():
    async def steps(pilot, app):
        await tab(pilot, app, "5")
        lines = app.screen.query_one("#primitives").visible_text()
        status = body(app, "#primitives-status")
        await pilot.press("down", "enter")  # the first primitive's holder
        await settle(pilot, app)
        return lines, status, type(app.screen).__name__, getattr(app.screen, "task_name", None)

    lines, status, screen, opened = drive(FakeBackend(), steps)
    text = "\n".join(lines)
    assert "KIND" in lines[0] and "CREATED AT" in lines[0]
    # contended first; each lock with its holder and waiter, how long and where
    assert lines[1].split()[:3] == ["Lock", "0xa1", "locked"] and "main /srv/app/locks.py:40" in lines[1]
    assert "holder: 'left'" in lines[2] and "12.5s" in lines[2] and "at /srv/app/locks.py:20" in lines[2]
    assert "waiter: 'right'" in lines[3] and "12.4s" in lines[3] and "at /srv/app/locks.py:29" in lines[3]
    assert any("holder: 'leaker'" in line and "done (!)" in line for line in lines)
    assert any("waiter (get): 'consumer'" in line and "45.0s" in line for line in lines)
    assert "(created before loopscope)" in text
    assert "5 primitives" in status and "5 waiting tasks" not in status and "4 waiting tasks" in status
    assert screen == "DetailScreen" and opened == "left"


def test_groups_screen_is_a_tree():
    async def steps(pilot, app):
        await tab(pilot, app, "6")
        return app.screen.query_one("#groups").visible_text()

    lines = [line.rstrip() for line in drive(FakeBackend(), steps)]
    i = next(i for i, line in enumerate(lines) if "[asyncio.TaskGroup] 0xg1" in line)
    assert "open" in lines[i] and "in task 'conn-0'" in lines[i] and "main /srv/app/app.py:50" in lines[i]
    assert "'worker-1' 0x1001  pending" in lines[i + 1]
    # the nested group hangs under the child task that opened it
    assert "[asyncio.TaskGroup] 0xg2" in lines[i + 2] and "closing (waiting for children)" in lines[i + 2]
    assert lines[i + 2].index("[") > lines[i + 1].index("'worker-1'")
    assert "'worker-3' 0x1003  pending" in lines[i + 3]
    assert "2 older finished children not kept" in lines[i + 4]
    assert any("'quick' 0x1009  done (19.0s ago)" in line for line in lines)


def test_asyncgens_screen():
    async def steps(pilot, app):
        await tab(pilot, app, "7")
        lines = app.screen.query_one("#asyncgens").visible_text()
        await pilot.press("enter")
        await settle(pilot, app)
        return lines, getattr(app.screen, "task_id", None)

    lines, opened = drive(FakeBackend(), steps)
    assert any(line.split()[:3] == ["0xag1", "ticker", "suspended"] and "/srv/app/gens.py:16" in line and "'conn-0'" in line for line in lines)
    assert any(line.split()[:3] == ["0xag2", "done_gen", "closed"] for line in lines)
    assert opened == "0x1000"  # Enter opens the owner task


def test_deadlocks_screen_draws_each_cycle_as_a_path_and_labels_heuristics():
    async def steps(pilot, app):
        await tab(pilot, app, "8")
        return body(app, "#deadlocks-body")

    text = drive(FakeBackend(), steps)
    assert "DEADLOCK 1" in text and "'right' -> 'left' -> 'right', for at least 12.4s" in text
    assert "task 'right' --waits on--> Lock 0xa1 (locks.py:40) --held by--> \n" in text
    assert "task 'left' --waits on--> Lock 0xa2 (locks.py:41) --held by--> \n" in text
    assert "task 'right'   (back to the start: a cycle)" in text
    assert "task 'ping' --awaits--> \n" in text and "task 'pong' --awaits--> \n" in text
    heur = text.index("Heuristics — possible problems, NOT proven deadlocks")
    assert text.index("DEADLOCK 2") < heur
    assert "[held-by-finished]" in text[heur:] and "[unreferenced-wait]" in text[heur:]


def test_cycle_path_hops_chain_into_each_other():
    from tui_fake import deadlocks_shape

    c = deadlocks_shape()["cycles"][0]
    hops = cycle_path(c)
    assert len(hops) == len(c["edges"]) + 1
    for e, nxt in zip(c["edges"], hops[1:]):
        assert nxt.startswith(f"task '{e['held_by']['task_name']}'")


def test_wait_screens_without_the_methods_say_so():
    async def steps(pilot, app):
        out = {}
        for key, wid in (("5", "#primitives-status"), ("6", "#groups-status"), ("7", "#asyncgens-status"), ("8", "#deadlocks-body")):
            await tab(pilot, app, key)
            out[key] = body(app, wid)
        return out

    out = drive(FakeBackend(waits=False), steps)
    assert out["5"].startswith("primitives not available from this agent")
    assert out["6"].startswith("task groups not available from this agent")
    assert out["7"].startswith("async generators not available from this agent")
    assert out["8"].startswith("deadlock detection not available from this agent")


def test_export_of_a_wait_screen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def steps(pilot, app):
        await tab(pilot, app, "8")
        await pilot.press("e")
        await pilot.pause()

    drive(FakeBackend(), steps)
    import json

    (path,) = tmp_path.glob("loopscope-top-4242-*.json")
    out = json.loads(path.read_text())
    assert out["view"] == "graph" and len(out["data"]["cycles"]) == 2


# -- real processes ------------------------------------------------------------------------------


def _run_screens(backend: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        app = TopApp(backend=backend)
        async with app.run_test(size=(180, 40)) as pilot:
            await settle(pilot, app)
            await tab(pilot, app, "8")
            dead = body(app, "#deadlocks-body")
            await tab(pilot, app, "5")
            prims = app.screen.query_one("#primitives").visible_text()
            await pilot.press("1")
            await settle(pilot, app)
            return {"deadlocks": dead, "primitives": prims, "tasks": names(table_items(app))}

    return asyncio.run(go())


def test_deadlock_scenario_live_and_from_a_dump(ls, tmp_path):
    prog = ls.start_ready(DL)
    live = _run_screens(AgentBackend(prog.socket, prog.pid))
    dump = str(tmp_path / "dl.json")
    ls.ok("dump", prog.pid, "-o", dump)
    offline = _run_screens(DumpBackend(dump))
    short = {tag: os.path.basename(where(DL, tag)) for tag in ("lock-a", "lock-b")}
    for got in (live, offline):
        text = got["deadlocks"]
        assert "DEADLOCK 1" in text and "DEADLOCK 2" in text
        # the two-lock cycle as a path, whichever task the agent starts from
        assert (f"task 'left' --waits on--> Lock " in text) and (f"({short['lock-b']}) --held by--> \n    task 'right'" in text)
        assert f"task 'right' --waits on--> Lock " in text and f"({short['lock-a']}) --held by--> \n    task " in text
        assert f"at {where(DL, 'left-waits')}" in text and f"at {where(DL, 'right-waits')}" in text
        assert "waits on a Lock it holds itself" in text
        assert "Heuristics — possible problems, NOT proven deadlocks" in text and "'leaker'" in text
        prims = "\n".join(got["primitives"])
        assert "holder: 'left'" in prims and "waiter: 'right'" in prims and "holder: 'leaker'" in prims
        assert {"left", "right", "selfish", "victim"} <= set(got["tasks"])


def test_tasks_delta_stats_on_a_real_agent(ls):
    """The agent side of the busy/switches columns: rows carry the step
    counters, and a task that ran is sent again in ``changed``."""
    prog = ls.start_ready("scale.py", "300")
    with prog.connect() as conn:
        d = conn.call("tasks.delta", {"cursor": None, "stats": True})
        cols = d["columns"]
        assert cols[-4:] == ["steps", "busy", "longest", "first_step"]
        rows = {r[0]: dict(zip(cols, r)) for r in d["added"]}
        ticker = next(tid for tid, r in rows.items() if r["name"] == "ticker" or r["coro"] == "ticker")
        time.sleep(0.3)
        d2 = conn.call("tasks.delta", {"cursor": d["cursor"], "stats": True})
        changed = {c[0]: c for c in d2["changed"]}
        assert ticker in changed and changed[ticker][1] > (rows[ticker]["steps"] or 0) and changed[ticker][2] > 0
        # the 300 waiters never ran again: they are not resent
        assert len(changed) <= 3
        d3 = conn.call("tasks.delta", {"cursor": d2["cursor"]})  # without stats: the old shape
        assert "changed" not in d3 and d3["columns"][-1] == "loop_id"
    data = TopData(AgentBackend(prog.socket, prog.pid))
    data.refresh()
    assert data.mirror.has_stats and data.mirror.rows[ticker].steps


def test_health_on_a_blocked_real_process_keeps_the_ui_working(ls):
    release = ls.path("release")
    prog = ls.start_ready("blocked.py", release)
    try:
        wait_until(lambda: prog.call("hello")["loops"][0]["blocked"], timeout=5, what="the loop to be reported blocked")

        async def go() -> tuple[str, str, list[str]]:
            app = TopApp(backend=AgentBackend(prog.socket, prog.pid))
            async with app.run_test(size=(150, 40)) as pilot:
                await settle(pilot, app)
                await pilot.press("4")
                for _ in range(100):
                    await app.workers.wait_for_complete()
                    await pilot.pause(0.05)
                    text = body(app, "#health-body")
                    if "LOOP BLOCKED" in text:
                        break
                banner = body(app, "#banner")
                await pilot.press("1")  # the UI still answers while the loop is stuck
                await settle(pilot, app)
                return text, banner, names(table_items(app))

        text, banner, tasks = asyncio.run(go())
    finally:
        open(release, "w").close()
    assert "LOOP BLOCKED for" in text and "in blocker" in text
    assert f"block_the_loop {where('blocked.py', 'block')}" in text
    assert "lag " in text and "util " in text and "step p99 " in text and "live tasks " in text
    assert "LOOP BLOCKED" in banner and "block_the_loop" in banner
    assert "blocker" in tasks
