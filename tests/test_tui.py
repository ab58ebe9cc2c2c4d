"""``loopscope top`` driven through Textual's headless pilot.

The app runs against ``FakeBackend`` (fixed tasks, fixed clock), so each
test can compute what the screen must show from the data, independently
of the code under test.  The picker test uses real agents.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tui_fake import NOW, SITES, FakeBackend, health_shape, make_tasks

from loopscope.tui.app import TopApp
from loopscope.tui.datasource import Group, Row
from loopscope.tui.screens.detail import DetailScreen
from loopscope.tui.screens.dialogs import ConfirmScreen
from loopscope.tui.screens.main import MainScreen, TasksPane


async def settle(pilot: Any, app: TopApp) -> None:
    """Until the poller and every view worker are done and drawn."""
    for _ in range(100):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.data is not None and not app._polling and isinstance(app.screen, MainScreen | DetailScreen | ConfirmScreen):
            panes = app.query(TasksPane)
            if not panes or panes.first().seen_version == app.data.mirror.version:
                return
    raise AssertionError("the app did not settle")


def drive(backend: Any, steps: Callable[[Any, TopApp], Awaitable[Any]], size: tuple[int, int] = (140, 40)) -> Any:
    async def go() -> Any:
        app = TopApp(backend=backend, clock=lambda: NOW)
        async with app.run_test(size=size) as pilot:
            await settle(pilot, app)
            return await steps(pilot, app)

    return asyncio.run(go())


def table_items(app: TopApp) -> list[Any]:
    return list(app.screen.query_one(TasksPane).table.items)


def names(items: list[Any]) -> list[str]:
    return [r.name for r in items if isinstance(r, Row)]


RAW = make_tasks()


def test_opens_with_every_task_oldest_first():
    async def steps(pilot, app):
        return table_items(app), app.screen.query_one("#tasks").visible_text()

    items, lines = drive(FakeBackend(), steps)
    expected = [r[1] for r in sorted(RAW, key=lambda r: r[4])]
    assert names(items) == expected
    assert "AGE ▲" in lines[0]
    assert lines[1].split()[1] == expected[0]


def test_sort_cycles_and_reverses():
    async def steps(pilot, app):
        await pilot.press("s")  # age -> name
        await settle(pilot, app)
        by_name = names(table_items(app))
        await pilot.press("r")
        await settle(pilot, app)
        return by_name, names(table_items(app)), app.screen.query_one("#tasks-status").render()

    by_name, reversed_, status = drive(FakeBackend(), steps)
    assert by_name == sorted(r[1] for r in RAW)
    assert reversed_ == sorted((r[1] for r in RAW), reverse=True)
    assert "sort -name" in str(status)


def test_header_click_sorts_by_that_column():
    async def steps(pilot, app):
        table = app.screen.query_one("#tasks")
        x = table.visible_text()[0].index("COROUTINE")
        await pilot.click("#tasks", offset=(x + 1, 0))
        await settle(pilot, app)
        return [r.coro for r in table_items(app)]

    coros = drive(FakeBackend(), steps)
    assert coros == sorted(r[2] for r in RAW)


def test_filter_by_name_glob_and_by_word():
    async def steps(pilot, app):
        await pilot.press("slash")
        await pilot.press(*"name=worker-1*")
        await pilot.press("enter")
        await settle(pilot, app)
        globbed = names(table_items(app))
        await pilot.press("slash")
        await pilot.press("ctrl+u", *"jobs.py")
        await pilot.press("enter")
        await settle(pilot, app)
        return globbed, names(table_items(app))

    globbed, by_site = drive(FakeBackend(), steps)
    assert sorted(globbed) == sorted(r[1] for r in RAW if fnmatch.fnmatchcase(r[1], "worker-1*"))
    assert globbed  # the data has such names: the filter must keep them
    assert sorted(by_site) == sorted(r[1] for r in RAW if SITES[r[5]].endswith("jobs.py:5"))


def test_bad_filter_is_reported_and_keeps_the_view():
    async def steps(pilot, app):
        await pilot.press("slash", *"colour=red", "enter")
        await settle(pilot, app)
        return names(table_items(app)), [n.message for n in app._notifications]

    items, notes = drive(FakeBackend(), steps)
    assert len(items) == len(RAW)
    assert any("unknown filter field 'colour'" in n for n in notes)


def test_group_by_site_counts_and_expand():
    async def steps(pilot, app):
        await pilot.press("g")
        await settle(pilot, app)
        groups = table_items(app)
        await pilot.press("enter")  # expand the first (biggest) group
        await settle(pilot, app)
        return groups, table_items(app)

    groups, expanded = drive(FakeBackend(), steps)
    counts = Counter(SITES[r[5]] for r in RAW)
    assert [(g.key, g.count) for g in groups] == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert all(isinstance(g, Group) for g in groups)
    biggest = groups[0].key
    members = [x for x in expanded[1 : 1 + counts[biggest]]]
    assert all(isinstance(m, Row) and m.site == biggest for m in members)
    assert len(expanded) == len(groups) + counts[biggest]


def test_enter_opens_detail_with_stack_and_locals_on_request():
    backend = FakeBackend()

    async def steps(pilot, app):
        await pilot.press("down", "enter")
        await settle(pilot, app)
        first = str(app.screen.query_one("#body").render())
        await pilot.press("l")
        await settle(pilot, app)
        second = str(app.screen.query_one("#body").render())
        await pilot.press("escape")
        await settle(pilot, app)
        return first, second, type(app.screen).__name__

    first, second, after = drive(backend, steps)
    second_oldest = sorted(RAW, key=lambda r: r[4])[1]
    assert f"task {second_oldest[1]}  ({second_oldest[0]})" in first
    assert "await asyncio.sleep(60)" in first and "waiting on asyncio.sleep(60)" in first
    assert "conn = <Conn 7>" not in first and "conn = <Conn 7>" in second
    assert ("tasks.get", {"task": second_oldest[0], "locals": True}) in backend.calls
    assert after == "MainScreen"


def test_cancel_asks_first_and_no_means_no():
    backend = FakeBackend(allow_cancel=True)

    async def steps(pilot, app):
        await pilot.press("enter")
        await settle(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        asked = isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot, app)
        refused = [c for c in backend.calls if c[0] == "tasks.cancel"]
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app)
        return asked, refused, [c for c in backend.calls if c[0] == "tasks.cancel"]

    asked, refused, done = drive(backend, steps)
    oldest = min(RAW, key=lambda r: r[4])
    assert asked
    assert refused == []
    assert [c[1]["task"] for c in done] == [oldest[0]]


def test_cancel_not_offered_when_the_agent_does_not_allow_it():
    backend = FakeBackend(allow_cancel=False)

    async def steps(pilot, app):
        await pilot.press("enter")
        await settle(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        return type(app.screen).__name__, [n.message for n in app._notifications]

    screen, notes = drive(backend, steps)
    assert screen == "DetailScreen"
    assert any("does not allow cancelling" in n for n in notes)
    assert not [c for c in backend.calls if c[0] == "tasks.cancel"]


def test_health_tab_renders_the_health_method():
    async def steps(pilot, app):
        await pilot.press("4")
        await settle(pilot, app)
        return str(app.screen.query_one("#health-body").render())

    text = drive(FakeBackend(health=health_shape()), steps)
    assert "LOOP BLOCKED for 1.5s in worker-1" in text
    assert "crunch /srv/app/cpu.py:42" in text
    assert "p99 3.1ms" in text and "utilisation 42%" in text
    assert "█" in text  # the lag spike is the top of its sparkline
    assert "executor default: 1/4 busy" in text


def test_health_tab_without_health_method():
    async def steps(pilot, app):
        await pilot.press("4")
        await settle(pilot, app)
        return str(app.screen.query_one("#health-body").render())

    assert drive(FakeBackend(health=None), steps) == "health data not available from this agent"


def test_blocked_banner_from_hello_loops():
    async def steps(pilot, app):
        return str(app.screen.query_one("#banner").render()), app.screen.query_one("#banner").display

    text, shown = drive(FakeBackend(blocked=True), steps)
    assert shown and "LOOP BLOCKED for 1.5s" in text and "crunch /srv/app/cpu.py:42" in text


def test_dead_process_shows_a_message_and_keeps_the_last_data():
    backend = FakeBackend()

    async def steps(pilot, app):
        backend.dead = True
        app.poll()
        await settle(pilot, app)
        return str(app.screen.query_one("#banner").render()), len(table_items(app))

    banner, rows = drive(backend, steps)
    assert "process 4242 died during the query" in banner
    assert rows == len(RAW)


def test_history_tab_lists_failures():
    async def steps(pilot, app):
        await pilot.press("3")
        await settle(pilot, app)
        return app.screen.query_one("#history").visible_text()

    lines = drive(FakeBackend(), steps)
    assert any("flaky-3" in line and "ConnectionError: upstream refused call 3" in line for line in lines)


def test_sites_tab_counts_per_site():
    async def steps(pilot, app):
        await pilot.press("2")
        await settle(pilot, app)
        return app.screen.query_one("#sites").visible_text()

    lines = drive(FakeBackend(), steps)
    counts = Counter(SITES[r[5]] for r in RAW)
    for site, n in counts.items():
        assert any(line.split()[0] == str(n) and line.rstrip().endswith(site) and "+0" in line for line in lines), (site, lines)


def test_export_writes_the_current_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def steps(pilot, app):
        await pilot.press("slash", *"state=pending name=conn-*", "enter")
        await settle(pilot, app)
        await pilot.press("e")
        await pilot.pause()

    drive(FakeBackend(), steps)
    import json

    (path,) = tmp_path.glob("loopscope-top-4242-*.json")
    out = json.loads(path.read_text())
    assert out["view"] == "tasks" and out["filter"] == "state=pending name=conn-*"
    assert sorted(t["name"] for t in out["tasks"]) == sorted(r[1] for r in RAW if r[1].startswith("conn-"))


def test_picker_groups_workers_and_switches_between_them(ls, monkeypatch):
    a = ls.start_ready("cancel.py")
    b = ls.start_ready("cancel.py")
    monkeypatch.setenv("LOOPSCOPE_SOCKET_DIR", ls.sockdir)

    async def go() -> Any:
        app = TopApp(clock=lambda: NOW)
        async with app.run_test(size=(140, 30)) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                if getattr(app.screen, "groups", None):
                    break
            items = list(app.screen.query_one("#agents").items)
            await pilot.press("enter")  # the group row: opens its first worker
            await settle(pilot, app)
            first = app.data.backend.pid
            await pilot.press("right_square_bracket")
            await settle(pilot, app)
            return items, first, app.data.backend.pid

    items, first, second = asyncio.run(go())
    assert len(items) == 3 and len(items[0].members) == 2  # one group header, two workers
    assert {first, second} == {a.pid, b.pid} and first == min(a.pid, b.pid)


@pytest.mark.parametrize("n", [100_000])
def test_view_actions_on_100k_rows_need_no_backend_call(n):
    """Sort/filter/group on a big mirror are local: the backend sees only
    the refresh calls, never one per action."""
    rows = make_tasks(n)
    backend = FakeBackend(rows)

    async def steps(pilot, app):
        before = len(backend.calls)
        await pilot.press("s")
        await settle(pilot, app)
        await pilot.press("slash", *"worker-99", "enter")
        await settle(pilot, app)
        after = [c[0] for c in backend.calls[before:]]
        return names(table_items(app)), after

    found, calls = drive(backend, steps)
    assert set(calls) <= {"tasks.delta"}
    assert found == sorted(r[1] for r in rows if "worker-99" in r[1])


def test_tasks_delta_on_a_real_agent_chunks_then_sends_nothing_new(ls):
    """The agent side of the mirror: chunked first load, then empty deltas,
    and a reset for an unknown cursor."""
    prog = ls.start_ready("scale.py", "500")
    listed = {t["id"] for t in prog.call("tasks.list", {})["tasks"]}
    got: set[str] = set()
    cursor, chunks = None, 0
    with prog.connect() as conn:
        while True:
            d = conn.call("tasks.delta", {"cursor": cursor, "limit": 200})
            assert d["reset"] == (cursor is None)
            assert len(d["added"]) <= 200
            got |= {row[d["columns"].index("id")] for row in d["added"]}
            cursor, chunks = d["cursor"], chunks + 1
            if not d["more"]:
                break
        steady = conn.call("tasks.delta", {"cursor": cursor})
        unknown = conn.call("tasks.delta", {"cursor": "nope"})
    # the ticker task may come and go between calls; the 500 waiters may not
    assert len(listed ^ got) <= 1 and len(got) >= 500 and chunks >= 3
    assert steady["added"] == [] and steady["removed"] == [] and not steady["reset"]
    assert unknown["reset"] and len(unknown["added"]) >= 500
    assert any(label.endswith(":24") for label in [*d["sites"].values(), *unknown["sites"].values()])
