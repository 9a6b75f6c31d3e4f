"""Loss and per-layer gradient plots (textual-plotext), fed only finite points.

textual_plotext takes ~0.2 s to import, so it is imported after the first frame is on screen:
the panel mounts its plots from ``call_after_refresh``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from textual.containers import Vertical
from textual.widgets import Static

from gradtui.tui.snapshot import LayerFrame
from gradtui.tui.text import clean

if TYPE_CHECKING:
    from textual.app import ComposeResult

PLOT_INTERVAL: Final = 0.25  # plotext builds a whole figure per refresh: cap at 4 Hz
_COLORS: Final = ("cyan", "orange", "green", "magenta", "yellow", "red")


def finite_points(
    x: npt.ArrayLike, y: npt.ArrayLike, *, log: bool
) -> tuple[list[float], list[float]]:
    """Points plotext can draw: non-finite (and, for log, non-positive) values dropped."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log:
            ys = np.log10(np.where(ys > 0, ys, np.nan))
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep].tolist(), ys[keep].tolist()


class Plots(Vertical):
    """Two stacked plots: the run's loss, and grad RMS of the chosen layers over time."""

    DEFAULT_CSS = """
    Plots { height: 1fr; }
    Plots > .plot { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.frame: LayerFrame | None = None
        self.plot_layers: list[int] = []
        self.log_scale = True
        self._plots: list[Any] = []
        self._last = 0.0
        self._dirty = False

    @property
    def settled(self) -> bool:
        """True when the plots are mounted and show the latest data (tests wait on it)."""
        return bool(self._plots) and not self._dirty

    def compose(self) -> ComposeResult:
        yield Static("plots load after the first frame…", classes="placeholder")

    def on_mount(self) -> None:
        self.call_after_refresh(self._mount_plots)

    async def _mount_plots(self) -> None:
        from textual_plotext import PlotextPlot  # deferred: ~0.2 s import

        await self.query(".placeholder").remove()
        self._plots = [PlotextPlot(classes="plot"), PlotextPlot(classes="plot")]
        await self.mount_all(self._plots)
        self._dirty = True
        self.redraw(force=True)

    def update_frame(self, frame: LayerFrame | None, layers: list[int], *, log: bool) -> None:
        self.frame, self.plot_layers, self.log_scale = frame, layers, log
        self._dirty = True
        self.redraw()

    def redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._plots or not self._dirty or (not force and now - self._last < PLOT_INTERVAL):
            return
        self._last, self._dirty = now, False
        loss_plot, grad_plot = self._plots
        frame = self.frame
        lp = loss_plot.plt
        lp.clear_data()
        lp.clear_figure()
        lp.title("loss")
        if frame is not None:
            xs, ys = finite_points(frame.loss_steps, frame.loss, log=False)
            if xs:
                lp.plot(xs, ys, color="cyan", marker="braille")
        loss_plot.refresh()

        gp = grad_plot.plt
        gp.clear_data()
        gp.clear_figure()
        gp.title(f"log10 {frame.grad_label}" if frame and self.log_scale else "grad")
        if frame is not None and len(frame.steps):
            for k, layer in enumerate(self.plot_layers[: len(_COLORS)]):
                if layer >= frame.history.shape[1]:
                    continue
                xs, ys = finite_points(frame.steps, frame.history[:, layer], log=self.log_scale)
                if xs:
                    gp.plot(
                        xs,
                        ys,
                        color=_COLORS[k],
                        marker="braille",
                        label=clean(frame.names[layer], 24),
                    )
        grad_plot.refresh()
