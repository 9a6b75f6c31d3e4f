"""The dashboard screen: run list, alerts, layer table, heatmap, plots, status bar.

The app's frame timer calls ``paint``; it copies what changed from the fleet (one short lock
hold) and hands copies to the widgets. Widgets never see ``RunState`` or the wire.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input

from gradtui.tui.snapshot import LayerFrame, alerts_of, layer_frame, run_rows
from gradtui.tui.widgets.alert_panel import AlertPanel
from gradtui.tui.widgets.heatmap import Heatmap
from gradtui.tui.widgets.layer_table import LayerTable
from gradtui.tui.widgets.plots import Plots
from gradtui.tui.widgets.run_list import RunList
from gradtui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from gradtui.tui.app import GradApp

NARROW_BELOW = 120
WIDE_FROM = 180
ROWS_EVERY = 0.5  # liveness changes with time alone: refresh the run list at least this often


class MainScreen(Screen[None]):
    """The live dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.selected: str | None = None
        self.frame: LayerFrame | None = None
        self._fleet_version = -1
        self._frame_key: tuple[object, ...] = ()
        self._rows_at = 0.0
        self._alerts_key: object = None
        self.ready = False
        """Set once mounted: the frame timer can fire before compose has finished."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield RunList(id="runs")
                yield AlertPanel(id="alerts")
            with Vertical(id="mid"):
                yield LayerTable(id="layers")
                yield Input(placeholder="filter layers by name", id="filter")
                yield Heatmap(id="heatmap")
            yield Plots(id="plots")
        yield StatusBar(id="status")

    def on_mount(self) -> None:
        self.query_one("#runs", RunList).border_title = "runs"
        self.query_one("#alerts", AlertPanel).border_title = "alerts"
        self.query_one("#layers", LayerTable).border_title = "layers"
        self.query_one("#heatmap", Heatmap).border_title = "gradient flow (log10 grad RMS)"
        self.query_one("#plots", Plots).border_title = "plots"
        self.query_one("#layers", LayerTable).focus()
        self.ready = True

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW_BELOW, "narrow")
        self.set_class(self.size.width >= WIDE_FROM, "wide")

    # ------------------------------------------------------------------ painting

    def paint(self, app: GradApp, now: float) -> None:
        if not self.ready:
            return
        fleet = app.fleet
        runs = self.query_one("#runs", RunList)
        if fleet.version != self._fleet_version or time.monotonic() - self._rows_at > ROWS_EVERY:
            self._fleet_version = fleet.version
            self._rows_at = time.monotonic()
            runs.update_rows(run_rows(fleet, now))
            if self.selected is None or self.selected not in {r.run for r in runs.rows}:
                self.selected = runs.selected
        self._paint_run(app)
        self.query_one("#plots", Plots).redraw()
        self.query_one("#heatmap", Heatmap).flush()
        self.query_one("#status", StatusBar).show(app.status_info())

    def _paint_run(self, app: GradApp, force: bool = False) -> None:
        fleet = app.fleet
        heatmap = self.query_one("#heatmap", Heatmap)
        history = max(64, min(512, heatmap.size.width))
        alerts: list[object] = []
        with fleet.lock:
            run = fleet.runs.get(self.selected) if self.selected else None
            key = (self.selected, run.version if run else -1, history, app.log_scale)
            if key == self._frame_key and not force:
                return
            self._frame_key = key
            frame = layer_frame(run, history) if run is not None else None
            if run is not None:
                active, past = alerts_of(run)
                alerts = list(past) or list(active)
        self.frame = frame
        table = self.query_one("#layers", LayerTable)
        table.log_scale = app.log_scale
        table.thresholds = app.thresholds
        table.update_frame(frame)
        heatmap.update_frame(frame)
        self.query_one("#alerts", AlertPanel).update_alerts(alerts)
        self._update_plots(app)

    def _update_plots(self, app: GradApp) -> None:
        table = self.query_one("#layers", LayerTable)
        layers = sorted(table.marked)
        cur = table.current_layer
        if cur is not None and cur not in layers:
            layers.insert(0, cur)
        frame = self.frame
        if frame is not None and len(layers) < 2:
            params = [i for i, r in enumerate(frame.roles) if r == "param"]
            for extra in (params[:1] + params[-1:]) if params else []:
                if extra not in layers:
                    layers.append(extra)
        self.query_one("#plots", Plots).update_frame(frame, layers, log=app.log_scale)

    def repaint(self) -> None:
        """Repaint from state now (after a setting changed)."""
        from gradtui.tui.app import GradApp

        app = self.app
        if isinstance(app, GradApp) and self.ready:
            self._paint_run(app, force=True)

    # ------------------------------------------------------------------ events

    def on_run_list_run_highlighted(self, event: RunList.RunHighlighted) -> None:
        if event.run != self.selected:
            self.selected = event.run
            self.repaint()

    def on_layer_table_highlighted(self, event: LayerTable.Highlighted) -> None:
        from gradtui.tui.app import GradApp

        if isinstance(self.app, GradApp) and self.ready:
            self._update_plots(self.app)

    def on_layer_table_layer_selected(self, event: LayerTable.LayerSelected) -> None:
        from gradtui.tui.screens.layer_detail import LayerDetailScreen

        self.app.push_screen(LayerDetailScreen(event.run, event.layer))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("shown"):
            box.value = ""
            box.remove_class("shown")
            self.query_one("#layers", LayerTable).focus()
        self.ready = True

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_one("#layers", LayerTable).set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                event.input.remove_class("shown")
            self.query_one("#layers", LayerTable).focus()
        self.ready = True
