"""What waits for what: Primitives, Groups, Async generators, Deadlocks.

Each pane asks the agent for one thing (``primitives.list``,
``groups.list``, ``asyncgens.list``, ``graph.deadlocks``; a dump answers
from its snapshot) in a worker, only while it is the visible tab.  Those
calls walk the waiting tasks (and, for the deadlock heuristics, their
references), so a pane refetches at most every ``interval`` seconds and at
least 20x the last call's duration apart, as the poller does for the task
list.  An agent without the method, or a dump without the data, gets a
message in the pane, never a traceback.

The text builders (``primitive_items``, ``group_lines``,
``deadlock_text``…) are plain functions of the JSON, so tests can check
them without a terminal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from ...cli.render_waits import unknown_holders, unknown_site
from ...client.errors import ClientError
from ..datasource import Unavailable
from ..format import fmt_age, fmt_time
from ..table import Column, VirtualTable
from .detail import DetailScreen

if TYPE_CHECKING:
    from ..app import TopApp

Json = dict[str, Any]

HEAD_STYLE = Style(bold=True, color="cyan")
BAD_STYLE = Style(bold=True, color="red")
DIM_STYLE = Style(dim=True)
#: the poller's rule: the agent's share of the program's time stays small
MAX_SHARE = 0.05


def _name(r: Json | None) -> str:
    if not r:
        return "?"
    return repr(r.get("task_name") or r.get("task_id") or "?")


def _where(r: Json | None) -> str:
    w = (r or {}).get("where")
    return f"{w['filename']}:{w['lineno']}" if w else ""


def _short(path_line: str) -> str:
    """``/long/path/app.py:12`` -> ``app.py:12`` (for the drawn path)."""
    return os.path.basename(path_line)


class WaitPane(Vertical):
    """A tab fed by one of the wait methods; subclasses render ``data``."""

    METHOD = ""
    BODY_ID = ""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.data: Any = None
        self.error: str | None = None
        self._next = 0.0

    @property
    def top(self) -> TopApp:
        return self.app  # type: ignore[return-value]

    def update(self, force: bool = False) -> None:
        if getattr(self.top, "paused", False) and self.data is not None:
            return  # paused: keep showing what was frozen
        if force or time.monotonic() >= self._next:
            self._next = time.monotonic() + 3600  # until this fetch ends
            self.fetch()

    @work(thread=True, exclusive=True, group="waits")
    def fetch(self) -> None:
        t0 = time.perf_counter()
        data, error = None, None
        try:
            data = self.top.data.waits(self.METHOD)
        except Unavailable as e:
            error = str(e)
        except ClientError as e:
            error = f"unavailable: {e}"
        except Exception as e:  # noqa: BLE001 - shown in the pane, never a traceback
            error = f"{type(e).__name__}: {e}"
        took = time.perf_counter() - t0
        self.app.call_from_thread(self._fetched, data, error, took)

    def _fetched(self, data: Any, error: str | None, took: float) -> None:
        interval = getattr(self.top, "interval", 1.0)
        self._next = time.monotonic() + max(interval, took / MAX_SHARE)
        if error is not None and self.data is not None and "not available" not in error:
            self.error = error  # keep the last answer on screen, say why it is old
        else:
            self.data, self.error = data, error
        self.show()

    def show(self) -> None:
        pass

    def export(self) -> Any:
        return {"error": self.error} if self.data is None else self.data


# -- Primitives --------------------------------------------------------------------------------


@dataclass(slots=True)
class PrimLine:
    """A primitive (``task`` None) or one of its holders/waiters."""

    prim: Json
    task: Json | None = None
    role: str = ""


def primitive_order(prims: list[Json]) -> list[Json]:
    """Contended first (most waiters), then by kind and creation site."""
    return sorted(prims, key=lambda p: (-len(p.get("waiters") or []), p.get("kind") or "", p.get("site") or "~", p.get("id") or ""))


def primitive_items(prims: list[Json]) -> list[PrimLine]:
    items: list[PrimLine] = []
    for p in primitive_order(prims):
        items.append(PrimLine(p))
        for h in p.get("holders") or []:
            items.append(PrimLine(p, h, "holder"))
        if not p.get("holders") and not p.get("holders_known", True):
            items.append(PrimLine(p, {}, "holder"))
        for w in p.get("waiters") or []:
            role = w.get("role")
            items.append(PrimLine(p, w, "waiter" if role in (None, "acquire", "wait") else f"waiter ({role})"))
    return items


class PrimitivesPane(WaitPane):
    METHOD = "primitives.list"
    COLUMNS = [
        Column("KIND", 16),
        Column("ID / TASK", 30),
        Column("STATE / ROLE", 24),
        Column("AGE/FOR", 8, right=True),
        Column("SINCE", 12),
        Column("CREATED AT / WAITS AT", 0),
    ]

    def __init__(self) -> None:
        super().__init__(id="primitives-pane")

    def compose(self) -> ComposeResult:
        yield VirtualTable(self.COLUMNS, self._cells, self._style, id="primitives")
        yield Static("loading primitives…", id="primitives-status", classes="pane-status")

    @staticmethod
    def _cells(it: PrimLine) -> list[str]:
        p = it.prim
        if it.task is None:
            site = p.get("site") or unknown_site(p.get("kind", ""))
            return [p.get("kind", "?"), p.get("id", "?"), p.get("state", "?"), fmt_age(p.get("age")) if p.get("age") is not None else "", "", site]
        t = it.task
        if not t:  # holder not known
            return ["", "  holder: unknown", unknown_holders(p.get("kind", "")).removeprefix("unknown (").removesuffix(")"), "", "", ""]
        who = f"  {it.role}: {_name(t)}"
        state = t.get("state") or ""
        role = f"{state}" if state == "pending" else f"{state} (!)"
        where = _where(t)
        return ["", who, f"{t.get('task_id', '')} {role}", fmt_age(t.get("for_s")) if t.get("for_s") is not None else "", fmt_time(t.get("since"))[:12] if t.get("since") else "", f"at {where}" if where else ""]

    @staticmethod
    def _style(it: PrimLine) -> Style | None:
        if it.task is None:
            return BAD_STYLE if it.prim.get("waiters") and it.prim.get("holders") and any(h.get("state") != "pending" for h in it.prim["holders"]) else HEAD_STYLE
        if it.task and it.role == "holder" and it.task.get("state") != "pending":
            return BAD_STYLE  # held by a task that has finished
        return None

    def show(self) -> None:
        status = self.query_one("#primitives-status", Static)
        table = self.query_one("#primitives", VirtualTable)
        if self.data is None:
            table.set_items([])
            status.update(self.error or "no data")
            return
        prims = self.data.get("primitives") or []
        table.set_items(primitive_items(prims), keep=lambda it: (it.prim.get("id"), (it.task or {}).get("task_id"), it.role))
        waiting = sum(len(p.get("waiters") or []) for p in prims)
        parts = [f"{len(prims)} primitives", f"{waiting} waiting tasks", "contended first", "Enter on a task opens it"]
        if self.data.get("enabled") is False:
            parts.insert(0, "primitive tracking is off: only primitives found from waiting tasks, holders unknown")
        if self.error:
            parts.insert(0, f"{self.error} (showing the last answer)")
        status.update("  ·  ".join(parts))

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        t = event.item.task
        if t and t.get("task_id"):
            self.app.push_screen(DetailScreen(t["task_id"], t.get("task_name") or t["task_id"]))


# -- Groups -------------------------------------------------------------------------------------


@dataclass(slots=True)
class TreeLine:
    text: str
    task_id: str | None = None
    task_name: str | None = None
    head: bool = False


def group_lines(gs: list[Json]) -> list[TreeLine]:
    """Groups as a tree: a group nests under the child task that owns it."""
    child_of: dict[str, str] = {}
    for g in gs:
        for c in g.get("children") or []:
            child_of[c["task_id"]] = g["id"]
    kids: dict[str, list[Json]] = {}
    roots = []
    for g in gs:
        owner = child_of.get(g.get("parent_id") or "")
        if owner and owner != g["id"]:
            kids.setdefault(g.get("parent_id") or "", []).append(g)
        else:
            roots.append(g)
    lines: list[TreeLine] = []

    def walk(g: Json, prefix: str, last: bool, depth: int) -> None:
        head = (
            f"{prefix}{'└─ ' if last else '├─ '}[{g.get('kind')}] {g.get('id')}  {g.get('state')}  "
            f"age {fmt_age(g.get('age'))}  in task {g.get('parent_name')!r}  created at {g.get('site') or '?'}"
        )
        lines.append(TreeLine(head, g.get("parent_id"), g.get("parent_name"), head=True))
        p = prefix + ("   " if last else "│  ")
        children = g.get("children") or []
        dropped = g.get("finished_dropped") or 0
        for j, c in enumerate(children):
            end = j == len(children) - 1 and not dropped
            state = c.get("state") or "?"
            text = f"{p}{'└─ ' if end else '├─ '}{c.get('task_name')!r} {c['task_id']}  {state}"
            if state != "pending" and c.get("for_s") is not None:
                text += f" ({fmt_age(c['for_s'])} ago)"
            lines.append(TreeLine(text, c["task_id"], c.get("task_name")))
            sub = kids.get(c["task_id"], []) if depth < 32 else []
            for k, sg in enumerate(sub):
                walk(sg, p + ("   " if end else "│  "), k == len(sub) - 1, depth + 1)
        if dropped:
            lines.append(TreeLine(f"{p}└─ … {dropped} older finished children not kept"))

    for j, g in enumerate(roots):
        walk(g, "", j == len(roots) - 1, 0)
    return lines


class GroupsPane(WaitPane):
    METHOD = "groups.list"

    def __init__(self) -> None:
        super().__init__(id="groups-pane")

    def compose(self) -> ComposeResult:
        yield VirtualTable([Column("TASK GROUPS → CHILDREN (state)", 0)], lambda it: [it.text], lambda it: HEAD_STYLE if it.head else None, id="groups")
        yield Static("loading task groups…", id="groups-status", classes="pane-status")

    def show(self) -> None:
        status = self.query_one("#groups-status", Static)
        table = self.query_one("#groups", VirtualTable)
        if self.data is None:
            table.set_items([])
            status.update(self.error or "no data")
            return
        gs = self.data.get("groups") or []
        table.set_items(group_lines(gs), keep=lambda it: it.text)
        msg = f"{len(gs)} live task groups · a group nests under the child task that opened it · Enter opens a task" if gs else "no live task groups"
        status.update(f"{self.error} (showing the last answer) · {msg}" if self.error else msg)

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        it = event.item
        if it.task_id:
            self.app.push_screen(DetailScreen(it.task_id, it.task_name or it.task_id))


# -- Async generators ------------------------------------------------------------------------


def asyncgen_cells(a: Json) -> list[str]:
    fr = a.get("frame")
    owner = f"{a.get('owner_name')!r} ({a.get('owner_id')})" if a.get("owner_id") else "?"
    return [
        a.get("id", "?"), a.get("name", "?"), a.get("state", "?"), fmt_age(a.get("age")), owner,
        f"{fr['filename']}:{fr['lineno']}" if fr else "-", a.get("site") or "(first iterated before loopscope)",
    ]


class AsyncGensPane(WaitPane):
    METHOD = "asyncgens.list"

    def __init__(self) -> None:
        super().__init__(id="asyncgens-pane")

    def compose(self) -> ComposeResult:
        cols = [Column("ID", 14), Column("ASYNC GENERATOR", 18), Column("STATE", 10), Column("AGE", 7, right=True), Column("OWNER TASK", 28), Column("CURRENT FRAME", 0), Column("FIRST ITERATED AT", 0)]
        yield VirtualTable(cols, asyncgen_cells, id="asyncgens")
        yield Static("loading async generators…", id="asyncgens-status", classes="pane-status")

    def show(self) -> None:
        status = self.query_one("#asyncgens-status", Static)
        table = self.query_one("#asyncgens", VirtualTable)
        if self.data is None:
            table.set_items([])
            status.update(self.error or "no data")
            return
        ags = self.data.get("asyncgens") or []
        table.set_items(ags, keep=lambda a: a.get("id"))
        msg = f"{len(ags)} live async generators · Enter opens the owner task" if ags else "no live async generators"
        status.update(f"{self.error} (showing the last answer) · {msg}" if self.error else msg)

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        a = event.item
        if a.get("owner_id"):
            self.app.push_screen(DetailScreen(a["owner_id"], a.get("owner_name") or a["owner_id"]))


# -- Deadlocks ----------------------------------------------------------------------------------


def cycle_path(c: Json) -> list[str]:
    """The cycle as a path, one hop per line, each line ending where the
    next begins: ``task A --waits on--> Lock L --held by-->`` / ``task B …``,
    closed by the first task again."""
    lines: list[str] = []
    edges = c.get("edges") or []
    for e in edges:
        t = e.get("task") or {}
        if e.get("object_kind") == "task":
            lines.append(f"task {_name(t)} --awaits--> ")
        else:
            label = e.get("object_label") or e.get("object_kind", "?")
            site = label.split("(created at ", 1)[-1].rstrip(")") if "(created at " in label else ""
            obj = f"{e.get('object_kind')} {e.get('object_id')}" + (f" ({_short(site)})" if site else "")
            lines.append(f"task {_name(t)} --waits on--> {obj} --held by--> ")
    if edges:
        first = edges[0].get("task") or {}
        lines.append(f"task {_name(first)}   (back to the start: a cycle)")
    return lines


def deadlock_text(rep: Json) -> Text:
    out = Text()
    cycles = rep.get("cycles") or []
    if not cycles:
        out.append(f"No deadlock: no cycle in the wait-for graph ({rep.get('tasks', 0)} live tasks, {rep.get('edges', 0)} wait edges).\n", style="bold green")
    for i, c in enumerate(cycles, 1):
        dur = f", for at least {fmt_age(c['for_s'])}" if c.get("for_s") is not None else ""
        out.append(f" DEADLOCK {i} ", style="bold white on red")
        out.append(f" {c.get('summary', '')}{dur}\n", style="bold red")
        for j, hop in enumerate(cycle_path(c)):
            out.append("    ", style="red")
            out.append(hop + "\n", style="red" if j < len(c.get("edges") or []) else "bold red")
        out.append("  where each task waits:\n", style="dim")
        for e in c.get("edges") or []:
            t = e.get("task") or {}
            waited = f" for {fmt_age(t['for_s'])}" if t.get("for_s") is not None else ""
            at = f" at {_where(t)}" if _where(t) else ""
            if e.get("object_kind") == "task":
                out.append(f"    {_name(t)} ({t.get('task_id')}) awaits {e.get('object_label')}{waited}{at}\n")
            else:
                h = e.get("held_by") or {}
                held = f"; held by {_name(h)}" + (f" for {fmt_age(h['for_s'])}" if h.get("for_s") is not None else "") if h else ""
                out.append(f"    {_name(t)} ({t.get('task_id')}) waits{waited}{at} on {e.get('object_label')}{held}\n")
        out.append("\n")
    suspects = rep.get("suspects") or []
    if suspects:
        out.append("Heuristics — possible problems, NOT proven deadlocks:\n", style="bold yellow")
        for s in suspects:
            out.append(f"  [{s.get('kind', 'heuristic')}] ", style="yellow")
            summary = s.get("summary") or ""
            out.append((summary[len("heuristic: ") :] if summary.startswith("heuristic: ") else summary) + "\n")
            for t in s.get("tasks") or []:
                waited = f" for {fmt_age(t['for_s'])}" if t.get("for_s") is not None else ""
                at = f" at {_where(t)}" if _where(t) else ""
                out.append(f"      {t.get('role') or 'task'}: {_name(t)} ({t.get('task_id')}, {t.get('state')}){waited}{at}\n", style="dim")
    for note in rep.get("notes") or []:
        out.append(f"({note})\n", style="dim")
    return out


class DeadlocksPane(WaitPane):
    METHOD = "graph.deadlocks"

    def __init__(self) -> None:
        super().__init__(id="deadlocks-pane")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="deadlocks-scroll"):
            yield Static("looking for cycles in the wait-for graph…", id="deadlocks-body")

    def show(self) -> None:
        body = self.query_one("#deadlocks-body", Static)
        if self.data is None:
            body.update(self.error or "no data")
            return
        text = deadlock_text(self.data)
        if self.error:
            text = Text(f"{self.error} (showing the last answer)\n\n", style="bold") + text
        body.update(text)


__all__ = [
    "AsyncGensPane", "DeadlocksPane", "GroupsPane", "PrimitivesPane", "WaitPane",
    "asyncgen_cells", "cycle_path", "deadlock_text", "group_lines", "primitive_items",
]
