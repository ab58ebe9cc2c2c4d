"""One task in full: the same sections as ``loopscope inspect``.

Fetched when opened (``tasks.get``, one task's stacks only) in a worker, so
a slow agent never freezes the screen; ``l`` refetches with locals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ...cli import render
from ...client.errors import ClientError
from .dialogs import ConfirmScreen

if TYPE_CHECKING:
    from ..app import TopApp


class DetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("l", "toggle_locals", "Locals"),
        Binding("c", "cancel_task", "Cancel task"),
    ]
    DEFAULT_CSS = """
    DetailScreen #title { background: $primary; color: $text; padding: 0 1; }
    DetailScreen #body { padding: 0 1; }
    """

    def __init__(self, task_id: str, name: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.task_name = name
        self.locals = False
        self.info: dict[str, Any] | None = None

    @property
    def top(self) -> TopApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(f"task {self.task_name} ({self.task_id})", id="title")
        with VerticalScroll():
            yield Static("loading…", id="body")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="detail")
    def load(self) -> None:
        try:
            info = self.top.data.task(self.task_id, self.locals)
        except ClientError as e:
            self.app.call_from_thread(self._show, None, str(e))
            return
        self.app.call_from_thread(self._show, info, None)

    def _show(self, info: dict[str, Any] | None, error: str | None) -> None:
        body = self.query_one("#body", Static)
        if info is None:
            body.update(f"cannot read this task: {error}")
            return
        self.info = info
        text = render.inspect(info)
        if not self.locals:
            text += "\n\n(press l to show local variables)"
        body.update(text)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_locals(self) -> None:
        self.locals = not self.locals
        self.load()

    def action_cancel_task(self) -> None:
        if not self.top.data.can_cancel:
            why = "a dump file cannot cancel tasks" if self.top.data.kind == "dump" else "this agent does not allow cancelling (start it with `loopscope run --allow-cancel`)"
            self.notify(why, severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.do_cancel()

        self.app.push_screen(ConfirmScreen(f"Cancel task {self.task_name} ({self.task_id})?\nIt will get CancelledError at its next await."), answered)

    @work(thread=True, group="cancel")
    def do_cancel(self) -> None:
        try:
            self.top.data.cancel(self.task_id)
        except ClientError as e:
            self.app.call_from_thread(self.notify, f"cancel failed: {e}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"cancel requested for {self.task_name}")
        self.load()
