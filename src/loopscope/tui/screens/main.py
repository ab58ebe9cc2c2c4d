"""The main screen: Tasks, Sites, History and Health as tabs.

Panes never call the backend on the UI thread: the app's poller refreshes
the mirror in a worker and then calls ``update`` on the visible pane; the
Tasks pane rebuilds its (possibly 100,000-row) view in a worker too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.style import Style
from textual.css.query import NoMatches
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from ...client.errors import ClientError
from ...query import QueryError
from ..datasource import GROUP_KEYS, NUMERIC_KEYS, SORT_KEYS, Group, HealthUnavailable, More, Row, RowFilter, TaskView, group_rows
from ..format import blocked_banner, fmt_age, fmt_busy, fmt_count, fmt_time, frame_line, ms, sparkline
from ..table import Column, VirtualTable
from .detail import DetailScreen
from .waits import AsyncGensPane, DeadlocksPane, GroupsPane, PrimitivesPane, WaitPane

if TYPE_CHECKING:
    from ..app import TopApp

GROUP_STYLE = Style(bold=True, color="cyan")
MORE_STYLE = Style(dim=True, italic=True)


class Pane(Vertical):
    """A tab's content; ``update`` is called after each refresh while shown."""

    @property
    def top(self) -> TopApp:
        return self.app  # type: ignore[return-value]

    def update(self) -> None:
        pass


class TasksPane(Pane):
    COLUMNS = [
        Column("ID", 14, "id"),
        Column("NAME", 20, "name"),
        Column("COROUTINE", 22, "coro"),
        Column("STATE", 10, "state"),
        Column("AGE", 8, "age", right=True),
        Column("BUSY", 9, "busy", right=True),
        Column("SWITCHES", 10, "switches", right=True),
        Column("CREATION SITE", 0, "site"),
    ]

    def __init__(self) -> None:
        super().__init__(id="tasks-pane")
        self.view = TaskView()
        self.seen_version = -1
        self.seen_stats = -1
        self.last_action_ms: float | None = None
        self.matched = 0

    def compose(self) -> ComposeResult:
        table = VirtualTable(self.COLUMNS, self._cells, self._style, id="tasks")
        table.sort_key = self.view.sort
        yield table
        yield Input(placeholder="filter: name=GLOB coro=GLOB state=pending site=TEXT age=5s busy=10ms, or a word", id="filter")
        yield Static("", id="tasks-status")

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False

    def _cells(self, item: Any) -> list[str]:
        if isinstance(item, Row):
            return [
                item.id, item.name, item.coro, item.state, fmt_age(item.age(self.top.data.now())),
                fmt_busy(item.busy), fmt_count(item.steps), item.site or "(created before loopscope)",
            ]
        if isinstance(item, Group):
            mark = "▾" if item.key in self.view.expanded else "▸"
            oldest = fmt_age(self.top.data.now() - item.oldest) if item.oldest is not None else "?"
            return [f"{mark} {item.count} tasks", "", "", "", oldest, "", "", f"{self.view.group_by}: {item.key}"]
        if isinstance(item, More):
            return ["", f"… {item.hidden} more: filter to see them", "", "", "", "", "", ""]
        return [str(item)]

    @staticmethod
    def _style(item: Any) -> Style | None:
        if isinstance(item, Group):
            return GROUP_STYLE
        if isinstance(item, More):
            return MORE_STYLE
        return None

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#tasks", VirtualTable)

    def update(self, force: bool = False) -> None:
        m = self.top.data.mirror
        if force or m.version != self.seen_version:
            self.rebuild()
        elif m.stats_version != self.seen_stats and (self.view.sort.lstrip("-") in NUMERIC_KEYS or self.view.filter.uses_stats):
            self.rebuild()  # the order (or the filter's result) depends on busy/switches
        else:
            self.table.refresh()  # ages, busy and switches move on in place

    @work(thread=True, exclusive=True, group="view")
    def rebuild(self, started: float | None = None) -> None:
        """Sort/filter/group the mirror off the UI thread; ``started`` is
        when the user acted, so the status can say how long it took."""
        data = self.top.data
        version, stats = data.mirror.version, data.mirror.stats_version
        rows = list(data.mirror.rows.values())
        items, matched = self.view.build(rows, data.now())
        self.app.call_from_thread(self._show, items, matched, (version, stats), started)

    def _show(self, items: list[Any], matched: int, versions: tuple[int, int], started: float | None) -> None:
        try:
            table = self.table
        except NoMatches:  # the app is quitting: the pane is gone
            return
        self.seen_version, self.seen_stats = versions
        self.matched = matched
        table.sort_key = self.view.sort.lstrip("-") if not self.view.sort.startswith("-") else self.view.sort
        table.set_items(items, keep=lambda it: it.id if isinstance(it, Row) else ("g", getattr(it, "key", None)))
        if started is not None:
            self.last_action_ms = (time.perf_counter() - started) * 1000
        self._status()

    def _status(self) -> None:
        m = self.top.data.mirror
        parts = [f"{self.matched:,} of {len(m.rows):,} tasks", f"sort {self.view.sort}"]
        if self.view.filter.text:
            parts.append(f"filter {self.view.filter.text!r}")
        if self.view.group_by:
            parts.append(f"grouped by {self.view.group_by}")
        if self.last_action_ms is not None:
            parts.append(f"last action {self.last_action_ms:.0f} ms")
        self.query_one("#tasks-status", Static).update("  ·  ".join(parts))

    # -- actions (bound on the screen) ------------------------------------------------

    def set_sort(self, key: str) -> None:
        self.view.sort = key
        self.rebuild(time.perf_counter())

    def cycle_sort(self) -> None:
        key = self.view.sort.lstrip("-")
        nxt = SORT_KEYS[(SORT_KEYS.index(key) + 1) % len(SORT_KEYS)]
        self.set_sort(nxt)

    def reverse_sort(self) -> None:
        s = self.view.sort
        self.set_sort(s[1:] if s.startswith("-") else "-" + s)

    def cycle_group(self) -> None:
        order: list[str | None] = [None, *GROUP_KEYS]
        self.view.group_by = order[(order.index(self.view.group_by) + 1) % len(order)]
        self.view.expanded.clear()
        self.rebuild(time.perf_counter())

    def open_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.view.filter.text
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            flt = RowFilter.parse(event.value)
        except QueryError as e:
            self.notify(str(e), severity="error")
            return
        self.view.filter = flt
        event.input.display = bool(flt.text)
        self.table.focus()
        self.rebuild(time.perf_counter())

    def on_virtual_table_sort_requested(self, event: VirtualTable.SortRequested) -> None:
        self.set_sort(("-" + event.key) if self.view.sort == event.key else event.key)

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        item = event.item
        if isinstance(item, Group):
            self.view.expanded.symmetric_difference_update({item.key})
            self.rebuild(time.perf_counter())
        elif isinstance(item, Row):
            self.app.push_screen(DetailScreen(item.id, item.name))


class SitesPane(Pane):
    """Live tasks per creation site, and growth since the tab was first shown."""

    def __init__(self) -> None:
        super().__init__(id="sites-pane")
        self.baseline: dict[str, int] | None = None
        self.by_growth = False

    def compose(self) -> ComposeResult:
        yield VirtualTable(
            [Column("TASKS", 9, right=True), Column("GROWTH", 9, right=True), Column("OLDEST", 8, right=True), Column("CREATION SITE", 0)],
            self._cells,
            id="sites",
        )
        yield Static("", id="sites-status")

    def _cells(self, g: Group) -> list[str]:
        base = (self.baseline or {}).get(g.key, 0)
        growth = g.count - base
        oldest = fmt_age(self.top.data.now() - g.oldest) if g.oldest is not None else "?"
        return [f"{g.count:,}", f"{growth:+,}", oldest, g.key]

    def update(self) -> None:
        self.compute()

    @work(thread=True, exclusive=True, group="sites")
    def compute(self) -> None:
        rows = list(self.top.data.mirror.rows.values())
        groups = group_rows(rows, "site")
        self.app.call_from_thread(self._show, groups)

    def _show(self, groups: list[Group]) -> None:
        if self.baseline is None:
            self.baseline = {g.key: g.count for g in groups}
        if self.by_growth:
            base = self.baseline
            groups.sort(key=lambda g: -(g.count - base.get(g.key, 0)))
        self.query_one("#sites", VirtualTable).set_items(groups, keep=lambda g: g.key)
        self.query_one("#sites-status", Static).update(
            f"{len(groups)} sites · growth since this tab opened · sorted by {'growth' if self.by_growth else 'count'} (s toggles) · Enter filters Tasks to a site"
        )

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        site = event.item.key
        tasks = self.app.query_one(TasksPane)
        tasks.view.filter = RowFilter.parse(f"site={site.split()[-1]}") if " " in site else RowFilter.parse(f"site={site}")
        self.screen.query_one(TabbedContent).active = "tab-tasks"
        tasks.rebuild(time.perf_counter())


class HistoryPane(Pane):
    def __init__(self) -> None:
        super().__init__(id="history-pane")

    def compose(self) -> ComposeResult:
        yield VirtualTable(
            [Column("ENDED", 12), Column("OUTCOME", 10), Column("NAME", 22), Column("COROUTINE", 22), Column("WHY", 0)],
            self._cells,
            id="history",
        )
        yield Static("cancelled and failed tasks, most recent first (Enter: the full record)", id="history-status")

    @staticmethod
    def _cells(t: dict[str, Any]) -> list[str]:
        o = t.get("outcome") or {}
        why = ""
        if o.get("exc_type"):
            why = f"{o['exc_type']}: {o.get('exc_message') or ''}"
        c = t.get("cancel")
        if c:
            by = c.get("by_task_name") or "outside any task"
            at = frame_line(c["by_stack"][0]) if c.get("by_stack") else "?"
            why = f"cancelled by {by} at {at}" + (f" ({c['message']})" if c.get("message") else "")
        return [fmt_time(o.get("ended"))[:12], o.get("state", t.get("state", "?")), t["name"], t["coro"], why]

    def update(self) -> None:
        self.fetch()

    @work(thread=True, exclusive=True, group="history")
    def fetch(self) -> None:
        try:
            page = self.top.data.history("all", 500)
        except ClientError as e:
            try:
                self.app.call_from_thread(self.query_one("#history-status", Static).update, f"history unavailable: {e}")
            except NoMatches:  # the app is quitting: the widget is gone
                return
            return
        tasks = [t for t in page.get("tasks") or [] if (t.get("outcome") or {}).get("state") != "done"]
        try:
            self.app.call_from_thread(self.query_one("#history", VirtualTable).set_items, tasks, lambda t: t["id"])
        except NoMatches:  # the app is quitting: the widget is gone
            return

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        self.app.push_screen(DetailScreen(event.item["id"], event.item["name"]))


class HealthPane(Pane):
    """Loop health from the agent's ``health`` method (or a dump's ``health``)."""

    def __init__(self) -> None:
        super().__init__(id="health-pane")

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("waiting for health data…", id="health-body")

    def update(self) -> None:
        self.fetch()

    @work(thread=True, exclusive=True, group="health")
    def fetch(self) -> None:
        try:
            text = render_health(self.top.data.health())
        except HealthUnavailable as e:
            text = str(e)
        except ClientError as e:
            text = f"health unavailable: {e}"
        try:
            self.app.call_from_thread(self.query_one("#health-body", Static).update, text)
        except NoMatches:  # the app is quitting: the widget is gone
            return


def _pct(v: float | None) -> str:
    return "?" if v is None else f"{v * 100:.0f}%"


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:,.0f}"


def render_health(health: dict[str, Any], width: int = 60) -> str:
    """The Health tab as text: per loop, numbers, sparklines, blocking steps.

    Fields may be null (a loop without the step hook, e.g. uvloop, has no
    step counts; utilisation is unknown before the first 1 s point)."""
    out: list[str] = []
    dl = health.get("deadlocks")
    if dl and dl.get("count"):
        out.append(f"DEADLOCK: {dl['count']} cycle(s) in the wait-for graph (tab 8 shows them):")
        out.extend(f"    {c.get('summary')}" + (f", for {fmt_age(c.get('for'))}" if c.get("for") is not None else "") for c in dl.get("cycles") or [])
        out.append("")
    for lp in health.get("loops") or []:
        lag, steps, tasks = lp.get("lag") or {}, lp.get("steps") or {}, lp.get("tasks") or {}
        exact = "" if lp.get("exact", True) else " (no step hook: lag and utilisation sampled, no step counts)"
        out.append(f"loop {lp.get('loop_id')}  thread {lp.get('thread')}  {lp.get('kind')}{exact}")
        blocked = lp.get("blocked")
        if blocked:
            who = (blocked.get("task") or {}).get("name") or "no task"
            out.append(f"  LOOP BLOCKED for {fmt_age(blocked.get('duration'))} in {who}:")
            out.extend(f"      at {frame_line(f)}" + (f"   {f['source'].strip()}" if f.get("source") else "") for f in (blocked.get("stack") or [])[:8])
        out.append(
            f"  lag last {ms(lag.get('last'))}  avg {ms(lag.get('avg'))}  max {ms(lag.get('max'))}   "
            f"utilisation {_pct(lp.get('utilisation'))}"
        )
        out.append(
            f"  steps {_num(steps.get('count'))}  p50 {ms(steps.get('p50'))}  p95 {ms(steps.get('p95'))}  "
            f"p99 {ms(steps.get('p99'))}  max {ms(steps.get('max'))}"
        )
        out.append(
            f"  tasks live {_num(tasks.get('live'))}  created {_num(tasks.get('created'))}  finished {_num(tasks.get('finished'))}  "
            f"failed {_num(tasks.get('failed'))}  cancelled {_num(tasks.get('cancelled'))}"
        )
        series = lp.get("series") or {}
        span = len(series.get("t") or series.get("lag") or [])
        out.append(f"  last {min(span, width)} s, one bar per second (each line scaled to its own max):")
        for key, label, fmt in (("lag", "lag", ms), ("utilisation", "util", _pct), ("p99", "step p99", ms), ("live", "live tasks", _num)):
            vals = series.get(key) or []
            last = fmt(vals[-1]) if vals else "-"
            top = fmt(max((v for v in vals[-width:] if v is not None), default=None)) if vals else "-"
            out.append(f"  {label:<10} {sparkline(vals, width):<{width}} {last} (max {top})")
        for ex in lp.get("executors") or []:
            out.append(f"  executor {ex.get('name')}: {ex.get('active')}/{ex.get('max_workers')} busy, {ex.get('queued')} queued")
        if lp.get("top_busy"):
            out.append("  busiest tasks:")
            for t in lp["top_busy"][:5]:
                out.append(f"    {t.get('name')} ({t.get('coro')}): busy {ms(t.get('busy'))} over {t.get('steps')} steps, longest {ms(t.get('longest'))}")
        if lp.get("blocking"):
            out.append("  recent blocking steps:")
            for b in lp["blocking"][:10]:
                who = (b.get("task") or {}).get("name") or (b.get("task") or {}).get("coro") or "no task"
                out.append(f"    {fmt_time(b.get('at'))}  {ms(b.get('duration'))}  in {who}")
                out.extend(f"        at {frame_line(f)}" for f in (b.get("stack") or [])[:4])
        out.append("")
    return "\n".join(out) or "the agent reports no loops"


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("1", "tab('tab-tasks')", "Tasks"),
        Binding("2", "tab('tab-sites')", "Sites"),
        Binding("3", "tab('tab-history')", "History"),
        Binding("4", "tab('tab-health')", "Health"),
        Binding("5", "tab('tab-primitives')", "Primitives", show=False),
        Binding("6", "tab('tab-groups')", "Groups", show=False),
        Binding("7", "tab('tab-asyncgens')", "Async gens", show=False),
        Binding("8", "tab('tab-deadlocks')", "Deadlocks", show=False),
        Binding("s", "sort", "Sort"),
        Binding("r", "reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("g", "group", "Group"),
        Binding("p", "app.pause", "Pause"),
        Binding("e", "app.export", "Export"),
        Binding("left_square_bracket", "app.sibling(-1)", "Prev worker", show=False),
        Binding("right_square_bracket", "app.sibling(1)", "Next worker", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    DEFAULT_CSS = """
    MainScreen #title { background: $primary; padding: 0 1; height: 1; }
    MainScreen TabbedContent { height: 1fr; }
    MainScreen TabPane { height: 1fr; padding: 0; }
    MainScreen Pane { height: 1fr; }
    MainScreen #banner { background: $error; color: $text; padding: 0 1; display: none; }
    MainScreen #banner.shown { display: block; }
    MainScreen #status { background: $panel; padding: 0 1; height: 1; }
    MainScreen #tasks-status, MainScreen #sites-status, MainScreen #history-status, MainScreen .pane-status { background: $panel; padding: 0 1; }
    MainScreen WaitPane { height: 1fr; }
    MainScreen #deadlocks-scroll { padding: 0 1; }
    MainScreen VirtualTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        yield Static("", id="banner")
        with TabbedContent(initial="tab-tasks"):
            with TabPane("Tasks", id="tab-tasks"):
                yield TasksPane()
            with TabPane("Sites", id="tab-sites"):
                yield SitesPane()
            with TabPane("History", id="tab-history"):
                yield HistoryPane()
            with TabPane("Health", id="tab-health"):
                yield HealthPane()
            with TabPane("Primitives", id="tab-primitives"):
                yield PrimitivesPane()
            with TabPane("Groups", id="tab-groups"):
                yield GroupsPane()
            with TabPane("Async gens", id="tab-asyncgens"):
                yield AsyncGensPane()
            with TabPane("Deadlocks", id="tab-deadlocks"):
                yield DeadlocksPane()
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tasks", VirtualTable).focus()
        self.app._show_state()  # type: ignore[attr-defined]

    PANES = {
        "tab-sites": "#sites-pane", "tab-history": "#history-pane", "tab-health": "#health-pane",
        "tab-primitives": "#primitives-pane", "tab-groups": "#groups-pane", "tab-asyncgens": "#asyncgens-pane", "tab-deadlocks": "#deadlocks-pane",
    }

    @property
    def active_pane(self) -> Any:
        """The visible tab's pane (a ``Pane`` or a ``WaitPane``)."""
        tabs = self.query_one(TabbedContent)
        # ``active`` is empty until the tabs are mounted: Tasks is the default
        return self.query_one(self.PANES.get(tabs.active, "#tasks-pane"))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.active_pane
        if isinstance(pane, WaitPane):
            pane.update(force=True)  # fresh data when the tab is opened
        else:
            pane.update()
        tables = pane.query(VirtualTable)
        if tables:
            tables.first().focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def _tasks_or_sites(self) -> Pane:
        return self.active_pane

    def action_sort(self) -> None:
        pane = self.active_pane
        if isinstance(pane, TasksPane):
            pane.cycle_sort()
        elif isinstance(pane, SitesPane):
            pane.by_growth = not pane.by_growth
            pane.update()

    def action_reverse(self) -> None:
        if isinstance(self.active_pane, TasksPane):
            self.query_one(TasksPane).reverse_sort()

    def action_filter(self) -> None:
        self.action_tab("tab-tasks")
        self.query_one(TasksPane).open_filter()

    def action_group(self) -> None:
        if isinstance(self.active_pane, TasksPane):
            self.query_one(TasksPane).cycle_group()

    def action_clear_filter(self) -> None:
        tasks = self.query_one(TasksPane)
        box = tasks.query_one("#filter", Input)
        if box.display:
            box.display = False
            tasks.table.focus()

    def show_state(self, title: str, banner: str, status: str) -> None:
        if not self.query("#title"):
            return  # not composed yet: on_mount shows the state
        self.query_one("#title", Static).update(title)
        b = self.query_one("#banner", Static)
        b.update(banner)
        b.set_class(bool(banner), "shown")
        self.query_one("#status", Static).update(status)


__all__ = ["MainScreen", "TasksPane", "SitesPane", "HistoryPane", "HealthPane", "render_health", "blocked_banner"]
