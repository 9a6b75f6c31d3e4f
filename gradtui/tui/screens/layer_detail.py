"""One layer in depth: every statistic now, and its history on a log scale."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Static

from gradtui.tui.text import num, plain
from gradtui.tui.widgets.plots import PLOT_INTERVAL, finite_points
from gradtui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from gradtui.state import RunState
    from gradtui.tui.app import GradApp

PLOTTED = ("grad_rms", "out_grad_norm", "update_ratio", "grad_max")
COLORS = ("cyan", "orange", "green", "red")


class LayerDetailScreen(Screen[None]):
    """Pushed by enter on a layer; escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "back"),
    ]

    def __init__(self, run: str, layer: int) -> None:
        super().__init__(id="layer-detail")
        self.run = run
        self.layer_index = layer
        self._key: object = None
        self._plot: Any = None
        self._last = 0.0
        self.ready = False

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with Horizontal(id="detail-body"):
            yield Static(id="detail-values")
            yield Static("loading plot…", id="detail-plot-slot")
        yield StatusBar(id="status")

    def on_mount(self) -> None:
        self.ready = True
        self.call_after_refresh(self._mount_plot)

    async def _mount_plot(self) -> None:
        from textual_plotext import PlotextPlot  # deferred: ~0.2 s import

        slot = self.query_one("#detail-plot-slot")
        self._plot = PlotextPlot(id="detail-plot")
        await slot.remove()
        await self.query_one("#detail-body").mount(self._plot)
        self._key = None

    def paint(self, app: GradApp, now: float) -> None:
        if not self.ready:
            return
        self.query_one("#status", StatusBar).show(app.status_info())
        with app.fleet.lock:
            run = app.fleet.runs.get(self.run)
            if run is None or self.layer_index >= len(run.layers):
                return
            key = (run.version, app.log_scale, self._plot is not None)
            if key == self._key or time.monotonic() - self._last < PLOT_INTERVAL:
                return
            self._key, self._last = key, time.monotonic()
            info = run.layers[self.layer_index]
            title = Text.assemble(
                plain(run.name, style="bold"),
                " / ",
                plain(info.name, style="bold cyan"),
                f"  {info.kind} {info.role}",
                f"  shape {info.shape}" if info.shape else "",
                f"  {info.params:,} params" if info.params else "",
            )
            values = self._values_table(run)
            series = {c: run.series(c, recent=512) for c in PLOTTED if run.column(c) >= 0}
        self.query_one("#detail-title", Static).update(title)
        self.query_one("#detail-values", Static).update(values)
        if self._plot is not None:
            plt = self._plot.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title("log10 of layer stats" if app.log_scale else "layer stats")
            for color, (column, (steps, vals)) in zip(COLORS, series.items(), strict=False):
                xs, ys = finite_points(steps, vals[:, self.layer_index], log=app.log_scale)
                if xs:
                    plt.plot(xs, ys, color=color, marker="braille", label=column)
            self._plot.refresh()

    def _values_table(self, run: RunState) -> Table:
        table = Table(show_header=True, box=None, padding=(0, 1))
        table.add_column("stat")
        table.add_column("value", justify="right")
        latest = run.latest
        role = run.layers[self.layer_index].role
        for j, column in enumerate(run.columns):
            value = float(latest.stats[self.layer_index, j]) if latest is not None else float("nan")
            # NaN in a column that does not apply to this kind of row means "n/a", not NaN.
            not_applicable = (role == "param") == column.startswith("act_")
            if not_applicable and math.isnan(value):
                table.add_row(plain(column, style="dim"), Text("·", "dim"))
            else:
                table.add_row(plain(column), num(value))
        if latest is not None:
            table.add_row(Text("step", "dim"), Text(str(latest.step)))
        return table
