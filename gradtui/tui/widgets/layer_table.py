"""The per-layer table: one row per layer in model order, coloured by health, sortable, filterable.

It holds a ``LayerFrame`` (a copy) and formats only the rows on screen, so 1,000 layers repaint
at the frame rate without rebuilding anything.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from gradtui.tui.health import Thresholds, fraction_style, grad_style, update_style
from gradtui.tui.snapshot import LayerFrame
from gradtui.tui.text import fmt_num, num, plain
from gradtui.tui.widgets.rows import Column, RowView
from gradtui.tui.widgets.sparkline import sparkline

SORT_KEYS: Final = ("model", "grad", "signal", "update", "act")
NA: Final = Text("·", style="dim")


class LayerTable(RowView):
    """Rows of the selected run's layers."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "cycle_sort", "sort"),
        Binding("x", "toggle_mark", "mark for plot"),
    ]

    columns: ClassVar[tuple[Column, ...]] = (
        Column("mark", " ", 1, priority=3, align="left"),
        Column("name", "layer", 12, flex=True, align="left"),
        Column("kind", "kind", 8, priority=1, align="left"),
        Column("grad", "grad RMS", 9, priority=10),
        Column("spark", "history", 12, priority=9, align="left"),
        Column("signal", "signal", 9, priority=5),
        Column("update", "update", 9, priority=8),
        Column("act", "sat/dead", 8, priority=7),
    )

    class LayerSelected(Message):
        """Enter on a layer: open its detail."""

        def __init__(self, run: str, layer: int) -> None:
            super().__init__()
            self.run = run
            self.layer = layer

    class Highlighted(Message):
        """The cursor moved to another layer (the plots follow it)."""

        def __init__(self, layer: int) -> None:
            super().__init__()
            self.layer = layer

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.frame: LayerFrame | None = None
        self.thresholds = Thresholds()
        self.log_scale = True
        self.sort_key = "model"
        self.sort_descending = False
        self.filter_text = ""
        self.marked: set[int] = set()
        self._order: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        self._largest = math.nan

    # ------------------------------------------------------------------ data in

    def update_frame(self, frame: LayerFrame | None) -> None:
        """New values for the table (same or another run); keeps the cursor on its layer."""
        keep = self.current_layer
        if frame is None or self.frame is None or frame.run != self.frame.run:
            self.marked.clear()
            keep = None
        structure = frame is None or self.frame is None or frame.names != self.frame.names
        self.frame = frame
        finite = frame.grad[np.isfinite(frame.grad)] if frame is not None else np.zeros(0)
        self._largest = float(finite.max()) if len(finite) else math.nan
        if structure or self.sort_key != "model":
            self._reorder(keep)
        else:
            self.refresh()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._reorder(self.current_layer)

    @property
    def current_layer(self) -> int | None:
        """Model index of the layer under the cursor."""
        if 0 <= self.cursor < len(self._order):
            return int(self._order[self.cursor])
        return None

    @property
    def visible_layers(self) -> list[int]:
        return [int(i) for i in self._order]

    def _sort_values(self, frame: LayerFrame) -> npt.NDArray[np.float64]:
        column = {
            "grad": frame.grad,
            "signal": frame.signal,
            "update": frame.update,
            "act": np.fmax(frame.saturated, frame.dead),
        }[self.sort_key]
        return np.asarray(column, dtype=np.float64)

    def _reorder(self, keep: int | None) -> None:
        frame = self.frame
        if frame is None:
            self._order = np.zeros(0, np.intp)
        else:
            idx = np.arange(len(frame.names))
            if self.filter_text:
                needle = self.filter_text.lower()
                idx = idx[[needle in n.lower() for n in frame.names]] if len(idx) else idx
            if self.sort_key != "model" and len(idx):
                vals = self._sort_values(frame)[idx]
                # argsort puts NaN (n/a or unknown) last either way; Inf sorts as a number.
                order = np.argsort(-vals if self.sort_descending else vals, kind="stable")
                idx = idx[order]
            self._order = idx.astype(np.intp)
        if keep is not None:
            where = np.nonzero(self._order == keep)[0]
            if len(where):
                self.cursor = int(where[0])
        self.set_row_count(len(self._order))
        self.refresh()

    # ------------------------------------------------------------------ rendering

    def header_title(self, col: Column) -> str:
        title = col.title
        if col.key == "grad" and self.frame is not None:
            title = self.frame.grad_label
        if col.key == self.sort_key:
            title += " ▼" if self.sort_descending else " ▲"
        return title

    def row_cells(self, index: int) -> dict[str, Text]:
        frame = self.frame
        if frame is None or index >= len(self._order):
            return {}
        i = int(self._order[index])
        th = self.thresholds
        is_param = frame.roles[i] == "param"
        cells: dict[str, Text] = {
            "mark": Text("●", "cyan") if i in self.marked else Text(" "),
            "name": plain(frame.names[i]),
            "kind": plain(frame.kinds[i], style="dim"),
        }
        g = float(frame.grad[i])
        if is_param:
            cells["grad"] = num(g, grad_style(g, self._largest, th))
            if len(frame.history):
                col = frame.history[:, i]
                cells["spark"] = sparkline(col, 12, log=self.log_scale)
            cells["update"] = num(float(frame.update[i]), update_style(float(frame.update[i]), th))
        else:
            cells["grad"] = NA
            cells["update"] = NA
        cells["signal"] = num(float(frame.signal[i]))
        sat, dead = float(frame.saturated[i]), float(frame.dead[i])
        if not math.isnan(sat):
            cells["act"] = Text(f"s{fmt_num(sat)}", fraction_style(sat, th.saturated))
        elif not math.isnan(dead):
            cells["act"] = Text(f"d{fmt_num(dead)}", fraction_style(dead, th.dead))
        else:
            cells["act"] = NA
        return cells

    # ------------------------------------------------------------------ actions

    def cursor_moved(self) -> None:
        layer = self.current_layer
        if layer is not None:
            self.post_message(self.Highlighted(layer))

    def activated(self) -> None:
        layer = self.current_layer
        if layer is not None and self.frame is not None:
            self.post_message(self.LayerSelected(self.frame.run, layer))

    def sort_by(self, key: str) -> None:
        if key not in SORT_KEYS:
            return
        if key == self.sort_key and key != "model":
            self.sort_descending = not self.sort_descending
        else:
            self.sort_key, self.sort_descending = key, False
        self._layout_width = -1
        self._reorder(self.current_layer)

    def action_cycle_sort(self) -> None:
        nxt = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self.sort_key, self.sort_descending = nxt, False
        self._reorder(self.current_layer)

    def action_toggle_mark(self) -> None:
        layer = self.current_layer
        if layer is None:
            return
        self.marked.symmetric_difference_update({layer})
        self.refresh()
        self.post_message(self.Highlighted(layer))
