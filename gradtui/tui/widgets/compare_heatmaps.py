"""Gradient-flow heatmaps of the compared runs, side by side on ONE colour scale.

Drawing reuses the dashboard's heatmap (``gradtui.tui.widgets.heatmap``: binning, palette,
half-block cells). Its ``quantize`` scales each map to its own range, which would make a run
whose gradients vanished look as bright as a healthy one; the levels are therefore mapped onto
the scale shared by all compared runs (``compare_data.shared_scale``) before drawing.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from gradtui.tui.text import fmt_num, plain
from gradtui.tui.widgets.compare_data import CompareRun
from gradtui.tui.widgets.compare_plots import rich_colour
from gradtui.tui.widgets.heatmap import EMPTY, LEVELS, NONFINITE, PALETTE, _cell_style, quantize

I16 = npt.NDArray[np.int16]
_NONFINITE_STYLE: Final = Style(color=Color.from_rgb(255, 0, 255))


def rescale_levels(levels: I16, own: tuple[float, float], shared: tuple[float, float]) -> I16:
    """Re-express palette levels quantized over ``own`` (log10 lo, hi) on the ``shared`` scale.

    Special levels (``EMPTY``, ``NONFINITE``) pass through unchanged.
    """
    lo, hi = own
    slo, shi = shared
    if not (math.isfinite(lo) and math.isfinite(hi)) or levels.size == 0:
        return levels
    span = hi - lo if hi > lo else 1.0
    values = lo + levels.astype(np.float64) / (LEVELS - 1) * span
    scaled = np.clip(np.rint((values - slo) / max(shi - slo, 1e-12) * (LEVELS - 1)), 0, LEVELS - 1)
    return np.where(levels >= 0, scaled, levels).astype(np.int16)


def shared_levels(run: CompareRun, bins: int, width: int, scale: tuple[float, float]) -> I16:
    """``[bin, time]`` palette levels of the run's last ``width`` steps on the shared scale."""
    hist = run.heat[-width:] if width > 0 else run.heat[:0]
    layers = hist.shape[1] if hist.ndim == 2 else 0
    if 0 < layers < bins:
        # Few layers, tall panel: repeat each layer's row so the map fills the height.
        hist = np.repeat(hist, bins // layers, axis=1)
    levels, lo, hi = quantize(hist.astype(np.float32), bins)
    return rescale_levels(levels, (lo, hi), scale)


class CompareHeatmap(Widget):
    """One run's heatmap (layers top = input, time left to right); title line in its colour."""

    DEFAULT_CSS = """
    CompareHeatmap { width: 1fr; height: 1fr; min-height: 4; margin: 0 1 0 0; }
    """

    def __init__(self, run: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run = run
        self.data: CompareRun | None = None
        self.slot = 0
        self.scale: tuple[float, float] = (-8.0, 0.0)
        self.levels: I16 = np.zeros((0, 0), np.int16)
        self._key: tuple[object, ...] = ()

    def show(self, data: CompareRun, slot: int, scale: tuple[float, float]) -> None:
        self.data, self.slot, self.scale = data, slot, scale
        self._recompute()

    def on_resize(self) -> None:
        self._recompute()

    def _recompute(self) -> None:
        data = self.data
        width, height = self.size.width, self.size.height
        key = (None if data is None else data.version, self.slot, self.scale, width, height)
        if key == self._key:
            return
        self._key = key
        if data is None or width <= 0 or height < 2:
            self.levels = np.zeros((0, 0), np.int16)
        else:
            self.levels = shared_levels(data, 2 * (height - 1), width, self.scale)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            title = Text("▀ ", style=rich_colour(self.slot), no_wrap=True, end="")
            if self.data is not None:
                title.append_text(plain(self.data.name, limit=max(1, width - 2)))
            return Strip(list(title.render(self.app.console, end=""))).crop_extend(0, width, None)
        levels = self.levels
        upper_row, lower_row = 2 * (y - 1), 2 * (y - 1) + 1
        if levels.shape[0] == 0 or upper_row >= levels.shape[0]:
            if y == 1 and levels.shape[0] == 0:
                return Strip([Segment("waiting for steps…", Style(dim=True))]).crop_extend(
                    0, width, None
                )
            return Strip.blank(width)
        upper = levels[upper_row]
        lower = levels[lower_row] if lower_row < levels.shape[0] else np.full_like(upper, EMPTY)
        segments = [
            Segment("▀", _cell_style(int(u), int(lo))) for u, lo in zip(upper, lower, strict=True)
        ]
        return Strip(segments).crop_extend(0, width, None)


def scale_legend(scale: tuple[float, float]) -> Text:
    """The one legend for every compared heatmap: low value, palette, high value, NaN colour."""
    lo, hi = scale
    text = Text(no_wrap=True, end="")
    text.append("grad RMS, shared scale  ", "dim")
    text.append(fmt_num(10**lo) if math.isfinite(lo) else "-", "dim")
    text.append(" ")
    for rgb in PALETTE[:: max(1, LEVELS // 12)]:
        text.append("█", Style(color=Color.from_rgb(*rgb)))
    text.append(" ")
    text.append(fmt_num(10**hi) if math.isfinite(hi) else "-", "dim")
    text.append("  ")
    text.append("■ nan/inf", _NONFINITE_STYLE)
    text.append("   rows: input (top) → output; columns: recent steps", "dim")
    return text


__all__ = ["NONFINITE", "CompareHeatmap", "rescale_levels", "scale_legend", "shared_levels"]
