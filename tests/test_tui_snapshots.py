"""SVG snapshots of the main screens (pytest-textual-snapshot).

Fixed data and a fixed clock (``tui_fake``), so the pictures only change
when the screens do.  After an intended change, regenerate with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the
diff report.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tui_fake import NOW, FakeBackend, health_shape

from loopscope.tui.app import TopApp

SIZE = (130, 32)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Times on screen are local times: pin the zone so pictures match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def app(**kw: Any) -> TopApp:
    return TopApp(backend=FakeBackend(**kw), clock=lambda: NOW)


async def settle(pilot: Any) -> None:
    for _ in range(5):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_tasks_screen(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, run_before=settle)


def test_tasks_grouped_by_site(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        pane = pilot.app.screen.query_one("#tasks-pane")
        pane.last_action_ms = None  # a timing, not part of the picture
        pane._status()

    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


def test_health_screen_blocked(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)

    assert snap_compare(app(health=health_shape(), blocked=True), terminal_size=SIZE, run_before=before)


def test_detail_screen(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=before)


async def _tab(pilot: Any, key: str) -> None:
    await settle(pilot)
    await pilot.press(key)
    for _ in range(3):
        await settle(pilot)


def test_primitives_screen(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, run_before=lambda pilot: _tab(pilot, "5"))


def test_deadlocks_screen(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, run_before=lambda pilot: _tab(pilot, "8"))
