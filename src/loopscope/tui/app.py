"""``loopscope top``: the Textual application.

The app owns one ``TopData`` (backend + mirror) and one poller.  Polling
runs in a thread worker, never on the UI thread, so an agent that is slow
to answer (or a process that died mid-call) leaves the UI responsive; the
status line says what happened instead of a traceback.

Observer effect: each refresh is one ``tasks.delta`` call, whose cost in
the monitored process is one walk over its live tasks.  The poller waits at
least ``interval`` seconds, and at least 20x the last call's duration, so
the agent's share of the program's time stays under about 5 % even when
that walk gets expensive (100,000+ tasks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches

from .. import __version__
from ..client.errors import ClientError
from ..model import SCHEMA_VERSION
from .datasource import Backend, Row, TopData, open_backend
from .format import blocked_banner, fmt_time
from .screens.dialogs import HelpScreen
from .screens.main import HealthPane, HistoryPane, MainScreen, SitesPane, TasksPane
from .screens.picker import PickerScreen
from .screens.waits import WaitPane

#: the agent's share of the program's time we aim to stay under
MAX_SHARE = 0.05


class TopApp(App[None]):
    TITLE = "loopscope top"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        target: str | None = None,
        *,
        interval: float = 1.0,
        backend: Backend | None = None,
        opener: Callable[[str], Backend] = open_backend,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.target = target
        self.interval = interval
        self.opener = opener
        self.clock = clock
        self._initial_backend = backend
        self.data: TopData = None  # type: ignore[assignment]  # set before MainScreen is shown
        self.siblings: list[str] = []
        self.paused = False
        self.error: str | None = None
        self.refreshed_at: float | None = None
        self._polling = False
        self._next_poll = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def on_mount(self) -> None:
        if self._initial_backend is not None:
            self._start(TopData(self._initial_backend, self.clock))
        elif self.target is not None:
            self.open_target(self.target, [self.target])
        else:
            self.push_screen(PickerScreen())
        self.set_interval(0.25, self._tick)

    def open_target(self, target: str, siblings: list[str]) -> None:
        try:
            data = TopData(self.opener(target), self.clock)
        except ClientError as e:
            if self.data is None and self.target is not None:
                self.exit(message=f"loopscope: {e}")
            else:
                self.notify(str(e), severity="error")
            return
        self.siblings = siblings
        self._start(data)

    def _start(self, data: TopData) -> None:
        if self.data is not None:
            self.data.close()
        self.data = data
        self.error = None
        self.refreshed_at = None
        self._next_poll = 0.0
        if isinstance(self.screen, MainScreen):
            self.screen.query_one(TasksPane).seen_version = -1
            self.screen.query_one(SitesPane).baseline = None
            for pane in self.screen.query(WaitPane):
                pane.data, pane.error, pane._next = None, None, 0.0
        else:
            while len(self.screen_stack) > 1:
                self.pop_screen()
            self.push_screen(MainScreen())
        self._show_state()
        self.poll()

    def on_unmount(self) -> None:
        if self.data is not None:
            self.data.close()

    # -- polling ----------------------------------------------------------------------

    def _tick(self) -> None:
        if self.data is None or self.paused or self._polling or time.monotonic() < self._next_poll:
            return
        self.poll()

    def poll(self) -> None:
        self._polling = True
        self._refresh_worker(self.data)

    @work(thread=True, group="poll")
    def _refresh_worker(self, data: TopData) -> None:
        error = None
        try:
            data.refresh()
        except ClientError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - shown in the status line, never a traceback
            error = f"{type(e).__name__}: {e}"
        self.call_from_thread(self._refreshed, data, error)

    def _refreshed(self, data: TopData, error: str | None) -> None:
        self._polling = False
        if data is not self.data:
            return
        wait = max(self.interval, data.last_cost_s / MAX_SHARE)
        if error is not None:
            self.error = error
            wait = max(wait, 3.0)  # keep trying: a restarted agent or a short stall recovers
        else:
            self.error = None
            self.refreshed_at = self.clock()
        self._next_poll = time.monotonic() + wait
        self._show_state()
        if error is None and isinstance(self.screen, MainScreen) and self.screen.query(TasksPane):
            try:
                self.screen.active_pane.update()
            except NoMatches:  # the screen is being torn down (quit) under us
                return

    def _show_state(self) -> None:
        screen = self.screen
        if not isinstance(screen, MainScreen) or self.data is None:
            return
        d = self.data
        h = d.hello
        title = f"loopscope top · {d.label} · {' '.join(h.get('argv') or [])} · Python {h.get('python', '?')}"
        if len(self.siblings) > 1:
            pos = self.siblings.index(self.target_pid()) + 1 if self.target_pid() in self.siblings else 0
            title += f" · worker {pos}/{len(self.siblings)} ([ ])"
        if d.kind == "dump":
            title += f" · snapshot taken {fmt_time(d.now())}"
        banner = blocked_banner(d.mirror.loops)
        if self.error:
            banner = (banner + "\n" if banner else "") + f"{self.error}  (showing the last data received)"
        status = "PAUSED — p resumes" if self.paused else ("" if d.kind == "dump" else f"refreshed {fmt_time(self.refreshed_at)}" if self.refreshed_at else "loading…")
        status += f" · {d.mirror.total:,} live tasks · ? help"
        screen.show_state(title, banner, status)

    def target_pid(self) -> str:
        return str(getattr(self.data.backend, "pid", ""))

    # -- actions ----------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._show_state()
        if not self.paused:
            self.poll()

    def action_sibling(self, step: int) -> None:
        if len(self.siblings) < 2:
            self.notify("no other workers of this service (open one from the picker: loopscope top)")
            return
        cur = self.target_pid()
        i = self.siblings.index(cur) if cur in self.siblings else 0
        self.open_target(self.siblings[(i + step) % len(self.siblings)], self.siblings)

    def action_export(self) -> None:
        path = export_view(self, os.getcwd())
        self.notify(f"wrote {path}")


def export_view(app: TopApp, directory: str) -> str:
    """The current tab's content as JSON (all matched rows, not just the
    ones on screen), in ``directory``."""
    screen = app.screen
    pane = screen.active_pane if isinstance(screen, MainScreen) else None
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "loopscope": __version__, "source": app.data.label, "taken_at": app.data.now()}
    if isinstance(pane, TasksPane):
        v = pane.view
        out.update(view="tasks", sort=v.sort, filter=v.filter.text, group_by=v.group_by)
        items = pane.table.items
        if v.group_by:
            out["groups"] = [{"key": g.key, "count": g.count, "oldest_created": g.oldest} for g in items if not isinstance(g, Row) and hasattr(g, "count")]
        else:
            out["tasks"] = [_row_json(r, app.data.now()) for r in items]
    elif isinstance(pane, SitesPane):
        base = pane.baseline or {}
        out.update(view="sites", sites=[{"site": g.key, "count": g.count, "growth": g.count - base.get(g.key, 0), "oldest_created": g.oldest} for g in pane.query_one("#sites").items])  # type: ignore[attr-defined]
    elif isinstance(pane, HistoryPane):
        out.update(view="history", tasks=list(pane.query_one("#history").items))  # type: ignore[attr-defined]
    elif isinstance(pane, WaitPane):
        out.update(view=pane.METHOD.split(".")[0], data=pane.export())
    elif isinstance(pane, HealthPane):
        try:
            out.update(view="health", health=app.data.health())
        except Exception as e:  # noqa: BLE001 - the export says why it is empty
            out.update(view="health", error=str(e))
    pid = getattr(app.data.backend, "pid", "dump")
    path = os.path.join(directory, f"loopscope-top-{pid}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=str)
    return path


def _row_json(r: Row, now: float) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "coro": r.coro, "state": r.state, "created": r.created, "age": r.age(now), "site": r.site,
        "parent_name": r.parent_name, "loop_id": r.loop_id, "steps": r.steps, "busy": r.busy, "longest": r.longest, "first_step": r.first_step,
    }


def run(target: str | None, interval: float = 1.0) -> int:
    app = TopApp(target, interval=interval)
    app.run()
    if app.return_code and app.return_code != 0:
        return app.return_code
    return 0
