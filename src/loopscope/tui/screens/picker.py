"""The process picker: every agent this user can reach, workers grouped.

Workers of one service (uvicorn/gunicorn workers, multiprocessing pools)
share their parent process and their command line, so they are listed
under one group header; opening one of them remembers its siblings and
``[`` / ``]`` switch between them without going back to the picker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from ...client.discovery import find_agents
from ...client.errors import ClientError
from ..datasource import AgentBackend
from ..table import Column, VirtualTable


@dataclass
class Agent:
    pid: int
    ppid: int | None
    path: str
    command: str
    tasks: int
    python: str
    blocked: bool


@dataclass
class ServiceGroup:
    command: str
    ppid: int | None
    members: list[Agent]


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def list_agents() -> list[Agent]:
    """Reachable agents with what their ``hello`` says (unreachable ones are
    skipped: the picker offers what can be opened)."""
    out = []
    for ag in find_agents():
        try:
            backend = AgentBackend(ag.path, ag.pid, timeout=2)
        except ClientError:
            continue
        h: dict[str, Any] = backend.hello
        backend.close()
        loops = h.get("loops") or []
        out.append(
            Agent(
                ag.pid, parent_pid(ag.pid), ag.path, " ".join(h.get("argv") or []) or "?",
                sum(lp.get("live_tasks", 0) for lp in loops), h.get("python", "?"), any(lp.get("blocked") for lp in loops),
            )
        )
    return out


def group_agents(agents: list[Agent]) -> list[ServiceGroup]:
    """Same parent and same command line: one service's workers.  A parent
    that is itself listed (a master with an agent) does not split groups."""
    groups: dict[tuple[int | None, str], ServiceGroup] = {}
    for a in sorted(agents, key=lambda a: a.pid):
        key = (a.ppid, a.command)
        groups.setdefault(key, ServiceGroup(a.command, a.ppid, [])).members.append(a)
    return sorted(groups.values(), key=lambda g: g.members[0].pid)


class PickerScreen(Screen[None]):
    BINDINGS = [Binding("r", "rescan", "Rescan"), Binding("q", "app.quit", "Quit")]
    DEFAULT_CSS = "PickerScreen #title { background: $primary; padding: 0 1; }"

    def compose(self) -> ComposeResult:
        yield Static("loopscope top — pick a process (Enter opens it)", id="title")
        yield VirtualTable(
            [Column("PID", 8, right=True), Column("TASKS", 8, right=True), Column("PYTHON", 8), Column("BLOCKED", 8), Column("COMMAND", 0)],
            self._cells,
            id="agents",
        )
        yield Static("", id="picker-status")
        yield Footer()

    @staticmethod
    def _cells(item: Any) -> list[str]:
        if isinstance(item, ServiceGroup):
            n = len(item.members)
            return ["", str(sum(m.tasks for m in item.members)), "", "", f"▸ {item.command}  ({n} worker{'s' if n != 1 else ''}, parent {item.ppid})"]
        return [str(item.pid), str(item.tasks), item.python, "YES" if item.blocked else "no", "  " + item.command]

    def on_mount(self) -> None:
        self.query_one(VirtualTable).focus()
        self.action_rescan()

    @work(thread=True, exclusive=True)
    def action_rescan(self) -> None:
        groups = group_agents(list_agents())
        self.app.call_from_thread(self._show, groups)

    def _show(self, groups: list[ServiceGroup]) -> None:
        self.groups = groups
        items: list[Any] = []
        for g in groups:
            if len(g.members) > 1:
                items.append(g)
            items.extend(g.members)
        self.query_one(VirtualTable).set_items(items)
        status = self.query_one("#picker-status", Static)
        status.update("no loopscope agents found (start a program with `loopscope run -- python app.py`); r rescans" if not items else f"{sum(len(g.members) for g in groups)} agents")

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        item = event.item
        group = next((g for g in self.groups if item in g.members or item is g), None)
        agent = item.members[0] if isinstance(item, ServiceGroup) else item
        siblings = [str(m.pid) for m in group.members] if group else [str(agent.pid)]
        self.app.open_target(str(agent.pid), siblings)  # type: ignore[attr-defined]
