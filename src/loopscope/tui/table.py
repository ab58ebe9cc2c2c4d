"""A table that renders only the rows on screen (toolong's ``LogLines`` shape).

Textual's ``DataTable`` builds a renderable per cell for every row it
holds; with 100,000 tasks that alone takes seconds.  Here the table holds a
plain list of items and a function that turns *one* item into cell text,
and ``render_line`` asks for the rows of the lines actually visible, so the
cost of a refresh is the height of the terminal, not the number of tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # 0: takes the width left over
    sort: str | None = None  # sort key a header click selects
    right: bool = False


HEADER = Style(bold=True, reverse=True)
CURSOR = Style(reverse=True)


def layout(columns: Sequence[Column], width: int) -> list[int]:
    """Column widths for a terminal ``width``: fixed ones as given, the
    flexible ones share what is left (at least 10 each)."""
    fixed = sum(c.width for c in columns if c.width) + len(columns) - 1
    flex = [c for c in columns if not c.width]
    share = max(10, (width - fixed) // len(flex)) if flex else 0
    return [c.width or share for c in columns]


def fit(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…" if width > 0 else ""
    return text.rjust(width) if right else text.ljust(width)


class VirtualTable(ScrollView, can_focus=True):
    """Rows are ``items``; ``cells(item)`` gives their texts, ``style(item)``
    an optional style.  Line 0 is the header (click it to sort)."""

    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "Top", show=False),
        Binding("end", "jump(-1)", "Bottom", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class Selected(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, table: VirtualTable, item: Any) -> None:
            super().__init__()
            self.table = table
            self.item = item

    class SortRequested(Message):
        """A click on a sortable column's header."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(
        self,
        columns: Sequence[Column],
        cells: Callable[[Any], Sequence[str]],
        style: Callable[[Any], Style | None] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.cells = cells
        self.row_style = style or (lambda _item: None)
        self.items: Sequence[Any] = []
        self.sort_key: str | None = None

    # -- data ------------------------------------------------------------------

    def set_items(self, items: Sequence[Any], keep: Callable[[Any], Any] | None = None) -> None:
        """Replace the rows.  ``keep`` maps an item to an identity: the
        cursor stays on the same item when it is still there."""
        current = self.current
        self.items = items
        self.virtual_size = Size(self.size.width, len(items) + 1)
        if keep is not None and current is not None:
            ident = keep(current)
            top, old = self.scroll_offset.y, self.cursor
            # look near the old position only: a refresh rarely moves rows far
            for i in range(max(0, old - 200), min(len(items), old + 200)):
                if keep(items[i]) == ident:
                    self.scroll_to(y=max(0, top + i - old), animate=False, immediate=True)
                    self.cursor = i
                    break
            else:
                self.cursor = min(self.cursor, max(0, len(items) - 1))
        else:
            self.cursor = min(self.cursor, max(0, len(items) - 1))
        self.refresh()

    @property
    def current(self) -> Any:
        if 0 <= self.cursor < len(self.items):
            return self.items[self.cursor]
        return None

    # -- rendering ---------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.items) + 1)

    def _line(self, texts: Sequence[str], widths: list[int]) -> str:
        return " ".join(fit(t, w, c.right) for t, w, c in zip(texts, widths, self.columns))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        widths = layout(self.columns, width)
        if y == 0:
            titles = [c.title + (" ▲" if c.sort and c.sort == self.sort_key else " ▼" if c.sort and "-" + c.sort == self.sort_key else "") for c in self.columns]
            return Strip([Segment(self._line(titles, widths).ljust(width)[:width], HEADER)])
        index = self.scroll_offset.y + y - 1
        if index >= len(self.items):
            return Strip([Segment(" " * width)])
        item = self.items[index]
        text = self._line(self.cells(item), widths).ljust(width)[:width]
        style = self.row_style(item)
        if index == self.cursor and self.has_focus:
            style = (style or Style()) + CURSOR
        elif index == self.cursor:
            style = (style or Style()) + Style(underline=True)
        return Strip([Segment(text, style)])

    def visible_text(self) -> list[str]:
        """The rendered lines, for tests and the export of what is seen."""
        return [self.render_line(y).text for y in range(self.size.height)]

    # -- navigation ---------------------------------------------------------------

    def watch_cursor(self, cursor: int) -> None:
        body = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if cursor < top:
            self.scroll_to(y=cursor, animate=False, immediate=True)
        elif cursor >= top + body:
            self.scroll_to(y=cursor - body + 1, animate=False, immediate=True)
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_move(self, delta: int) -> None:
        if self.items:
            self.cursor = max(0, min(len(self.items) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        if self.items:
            self.cursor = 0 if where == 0 else len(self.items) - 1

    def action_select(self) -> None:
        if self.current is not None:
            self.post_message(self.Selected(self, self.current))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            widths = layout(self.columns, self.size.width)
            x = 0
            for col, w in zip(self.columns, widths):
                if x <= event.x < x + w + 1 and col.sort:
                    self.post_message(self.SortRequested(self, col.sort))
                    return
                x += w + 1
            return
        index = self.scroll_offset.y + event.y - 1
        if 0 <= index < len(self.items):
            self.cursor = index
            if event.chain >= 2:
                self.action_select()
