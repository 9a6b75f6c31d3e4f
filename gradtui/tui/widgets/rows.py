"""A keyboard-first table drawn with Textual's line API: only visible rows are ever rendered.

``DataTable`` rebuilt or updated cell by cell at 15 Hz does not hold up at 1,000 layers; here a
repaint formats just the rows on screen, from data the subclass already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True, slots=True)
class Column:
    """One table column; the first ``flex`` column takes the width others leave."""

    key: str
    title: str
    width: int
    priority: int = 0
    """Lower priorities are dropped first when the table is too narrow."""
    align: str = "right"
    flex: bool = False


class RowView(ScrollView, can_focus=True):
    """Header line plus a cursor-navigable list of rows produced by ``row_cells``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "up", show=False),
        Binding("down,j", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("enter", "activate", "open", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"rowview--header", "rowview--cursor"}
    DEFAULT_CSS = """
    RowView { height: 1fr; overflow-x: hidden; }
    RowView > .rowview--header { text-style: bold; color: $text-muted; }
    RowView > .rowview--cursor { background: $primary 40%; }
    RowView:focus > .rowview--cursor { background: $primary 80%; }
    """

    columns: ClassVar[tuple[Column, ...]] = ()

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.cursor = 0
        self._count = 0
        self._layout: list[tuple[Column, int]] = []
        self._layout_width = -1
        self._style_cache: dict[object, tuple[Style, Style, Style]] = {}

    # --------------------------------------------------------------- subclass hooks

    empty_hint: tuple[str, ...] = ()
    """Lines shown (dimmed) under the header while there are no rows."""

    def row_cells(self, index: int) -> dict[str, Text]:
        """Cells of visible row ``index`` keyed by column key."""
        raise NotImplementedError

    def header_title(self, col: Column) -> str:
        return col.title

    def cursor_moved(self) -> None:
        """Called after the cursor changed row."""

    def activated(self) -> None:
        """Called on enter / double click."""

    # --------------------------------------------------------------- data

    @property
    def row_count(self) -> int:
        return self._count

    def set_row_count(self, count: int) -> None:
        """Tell the view how many rows exist; repaints the visible ones."""
        if count != self._count:
            self._count = count
            self.virtual_size = Size(self._width, count + 1)
            if self.cursor >= count:
                self.cursor = max(0, count - 1)
                self.cursor_moved()
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self._width, self._count + 1)

    # --------------------------------------------------------------- layout

    def _column_layout(self, width: int) -> list[tuple[Column, int]]:
        if width == self._layout_width:
            return self._layout
        cols = list(self.columns)
        flex = next((c for c in cols if c.flex), None)
        # Drop the least important columns until the rest fit beside a usable flex column.
        while True:
            fixed = sum(c.width + 1 for c in cols if not c.flex)
            room = width - fixed
            if flex is None or room >= flex.width or len(cols) <= 1:
                break
            victim = min((c for c in cols if not c.flex), key=lambda c: c.priority, default=None)
            if victim is None:
                break
            cols.remove(victim)
        self._layout = [(c, max(1, room) if c.flex else c.width) for c in cols]
        self._layout_width = width
        return self._layout

    def _join(self, cells: dict[str, Text], width: int, header: bool = False) -> Text:
        line = Text(no_wrap=True, end="")
        for i, (col, w) in enumerate(self._column_layout(width)):
            if i:
                line.append(" ")
            cell = Text(self.header_title(col)) if header else cells.get(col.key, Text())
            cell = cell.copy()
            cell.truncate(w, overflow="ellipsis")
            pad = w - cell.cell_len
            if col.align == "right" and not col.flex:
                line.append(" " * pad)
                line.append_text(cell)
            else:
                line.append_text(cell)
                line.append(" " * pad)
        return line

    # --------------------------------------------------------------- rendering

    @property
    def _width(self) -> int:
        # Excludes the vertical scrollbar, which ``size`` would include.
        return self.scrollable_content_region.width

    def _styles(self) -> tuple[Style, Style, Style]:
        # CSS lookups cost more than formatting a row; they change only with focus or theme.
        key = (self.has_focus, self.app.theme)
        cached = self._style_cache.get(key)
        if cached is None:
            base = self.rich_style
            cached = (
                base,
                base + self.get_component_rich_style("rowview--header"),
                base + self.get_component_rich_style("rowview--cursor"),
            )
            self._style_cache[key] = cached
        return cached

    def render_line(self, y: int) -> Strip:
        width = self._width
        base, header_style, cursor_style = self._styles()
        if y == 0:
            text = self._join({}, width, header=True)
            style = header_style
        else:
            index = int(self.scroll_offset.y) + y - 1
            if self._count == 0 and 0 <= y - 1 < len(self.empty_hint):
                hint = Segment(self.empty_hint[y - 1], base + Style(dim=True))
                return Strip([hint]).crop_extend(0, width, base)
            if index >= self._count:
                return Strip.blank(width, base)
            text = self._join(self.row_cells(index), width)
            style = cursor_style if index == self.cursor else base
        segments = [
            Segment(seg.text, style + seg.style if seg.style else style)
            for seg in text.render(self.app.console, end="")
        ]
        return Strip(segments).simplify().crop_extend(0, width, style)

    # --------------------------------------------------------------- navigation

    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def move_to(self, index: int) -> None:
        if self._count == 0:
            return
        index = max(0, min(self._count - 1, index))
        changed = index != self.cursor
        self.cursor = index
        top = int(self.scroll_offset.y)
        rows = self._visible_rows()
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + rows:
            self.scroll_to(y=index - rows + 1, animate=False)
        self.refresh()
        if changed:
            self.cursor_moved()

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * self._visible_rows())

    def action_jump(self, where: int) -> None:
        self.move_to(self._count - 1 if where < 0 else where)

    def action_activate(self) -> None:
        self.activated()

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            self.header_clicked(event.x)
            return
        self.move_to(int(self.scroll_offset.y) + event.y - 1)
        if event.chain >= 2:
            self.activated()

    def header_clicked(self, x: int) -> None:
        """Clicking a header cell (sortable tables override ``sort_by``)."""
        pos = 0
        for col, w in self._column_layout(self._width):
            if pos <= x < pos + w + 1:
                self.sort_by(col.key)
                return
            pos += w + 1

    def sort_by(self, key: str) -> None:
        """Sort on ``key``; tables without sorting ignore it."""
