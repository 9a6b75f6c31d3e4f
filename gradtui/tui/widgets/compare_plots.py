"""The compare view's two plots: gradient RMS against depth, and loss curves overlaid by step.

Both are textual-plotext plots fed only finite values (``compare_data.finite_points``); run
names reach plotext's legend through ``clean`` because its output is parsed as ANSI.

Log axes are drawn as log10 values on a linear axis with decade tick labels: plotext 5's own
``yscale("log")`` re-applies the log on every ``build()``, so the second repaint of the same
data (any resize) took the log of negative numbers and raised ``ValueError`` in ``render``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from gradtui.tui.text import clean
from gradtui.tui.widgets.compare_data import CompareRun, finite_points

F64: TypeAlias = npt.NDArray[np.float64]
RGB: TypeAlias = tuple[int, int, int]
RUN_COLOURS: Final[tuple[RGB, ...]] = (
    (86, 182, 255),  # blue
    (255, 159, 67),  # orange
    (220, 110, 240),  # violet
    (120, 220, 120),  # green
)
"""One colour per compare slot, the same in every plot, heatmap title and run card."""

ProfileMode: TypeAlias = Literal["latest", "window"]


def run_colour(slot: int) -> RGB:
    return RUN_COLOURS[slot % len(RUN_COLOURS)]


def rich_colour(slot: int) -> str:
    """The slot's colour as a Rich style string."""
    r, g, b = run_colour(slot)
    return f"rgb({r},{g},{b})"


def _legend(run: CompareRun, limit: int = 24) -> str:
    return clean(run.name, limit) or run.run


def decade_ticks(lo: float, hi: float, most: int = 8) -> tuple[list[float], list[str]]:
    """Tick positions (log10 units) at whole decades spanning ``lo..hi``, labelled ``1e-3``."""
    first, last = math.floor(lo), math.ceil(hi)
    step = max(1, math.ceil((last - first + 1) / most))
    ticks = [float(k) for k in range(first, last + 1, step)]
    return ticks, [f"1e{int(k)}" for k in ticks]


def log_range(ys: Sequence[F64]) -> tuple[float, float] | None:
    """(min, max) over the plotted log10 series, None when nothing was plotted."""
    finite = [y for y in ys if len(y)]
    if not finite:
        return None
    return min(float(y.min()) for y in finite), max(float(y.max()) for y in finite)


class _LogPlot(PlotextPlot):
    """A plotext plot whose log10 y axis gets decade ticks fitted to its height at render."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.log_range: tuple[float, float] | None = None

    def render(self) -> RenderResult:
        if self.log_range is not None:
            # One labelled row in three: plotext drops ticks that do not fit, differently
            # from one build to the next, so ask only for what fits.
            most = max(2, (self.size.height - 4) // 3)
            self.plt.yticks(*decade_ticks(*self.log_range, most=most))
        return super().render()


class DepthProfile(_LogPlot):
    """Gradient RMS (log y) against layer index (input side at 0), one line per run.

    The classic vanishing-gradient picture: a saturating net slopes down toward the input by
    orders of magnitude, a healthy one stays flat.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.mode: ProfileMode = "latest"
        self.empty = True
        """True when no run had a finite positive value to draw (tests look at this)."""

    def show(self, runs: Sequence[CompareRun], slots: Sequence[int]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        what = "latest step" if self.mode == "latest" else "recent-window geometric mean"
        plt.title(f"gradient RMS vs depth ({what})")
        plt.xlabel("layer (0 = input)")
        drawn: list[F64] = []
        for run, slot in zip(runs, slots, strict=True):
            values = run.latest if self.mode == "latest" else run.window
            x, y = finite_points(np.arange(len(values)), values, positive=True)
            if len(x) == 0:
                continue
            label = _legend(run)
            if run.nonfinite:
                label += " (nan/inf!)"
            y = np.log10(y)
            plt.plot(x.tolist(), y.tolist(), marker="braille", color=run_colour(slot), label=label)
            drawn.append(y)
        self.log_range = log_range(drawn)
        self.empty = not drawn
        if self.empty:
            plt.title("gradient RMS vs depth: no finite data yet")
        self.refresh()


class LossOverlay(_LogPlot):
    """Every run's loss against its step number, on one set of axes (aligned by step)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.log_y = False
        self.empty = True

    def show(self, runs: Sequence[CompareRun], slots: Sequence[int]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss by step" + (" (log)" if self.log_y else ""))
        plt.xlabel("step")
        drawn: list[F64] = []
        for run, slot in zip(runs, slots, strict=True):
            x, y = finite_points(run.loss_steps, run.loss_values, positive=self.log_y)
            if len(x) == 0:
                continue
            if self.log_y:
                y = np.log10(y)
            plt.plot(
                x.tolist(), y.tolist(), marker="braille", color=run_colour(slot), label=_legend(run)
            )
            drawn.append(y)
        if self.log_y:
            self.log_range = log_range(drawn)
        self.empty = not drawn
        if self.empty:
            plt.title("loss by step: no finite data yet")
        self.refresh()
