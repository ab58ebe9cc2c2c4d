"""Modal screens: the cancel confirmation and the help (``?``)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP = """\
loopscope top — keys

  1 2 3 4      Tasks, Sites, History, Health
  5 6 7 8      Primitives (holders, waiters), Groups (tree), Async generators,
               Deadlocks (cycles in the wait-for graph, then heuristics)
  ↑ ↓ PgUp PgDn Home End   move;  mouse: click a row, double-click opens it
  Enter        open the task (or expand / collapse a group)
  s  r         next sort column / reverse it  (click a header to sort by it);
               busy and switches sort the busiest first
  /            filter: name=GLOB coro=GLOB state=pending site=TEXT age=5s busy=10ms,
               or a bare word (substring of name, coroutine or site)
  g            group by: none → site → name → coro → state
  p            pause / resume (freeze what you see)
  e            export the current view as JSON
  [  ]         previous / next worker of the same service (from the picker)
  ?            this help;  ctrl+p  command palette;  q  quit

In a task:  l  locals on/off,  c  cancel (asks first; only if the agent allows it),
            Esc  back.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: auto; max-height: 90%; border: round $accent; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP, id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes/No; ``y``/``n`` work as well as the buttons, Esc is No."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; height: auto; border: thick $error; padding: 1 2; background: $surface; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            with Horizontal():
                yield Button("Yes, cancel it (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
