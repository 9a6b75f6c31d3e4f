"""Gradient-flow heatmap: layers (input at the top) x recent steps of log10 grad RMS.

Each character cell shows two layer bins with an upper half block (foreground = upper bin,
background = lower bin), so a 20-line panel shows 40 layers. Vanishing gradients appear as a
dark band toward the input; NaN/Inf cells are magenta whatever the scale.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from gradtui.tui.snapshot import LayerFrame
from gradtui.tui.text import fmt_num

# Dark -> bright anchors (inferno-like): dark means small gradients, so vanishing reads as "dead".
_ANCHORS: Final = (
    (0, 0, 4),
    (40, 11, 84),
    (101, 21, 110),
    (159, 42, 99),
    (212, 72, 66),
    (245, 125, 21),
    (250, 193, 39),
    (252, 255, 164),
)
LEVELS: Final = 24
REFRESH_S: Final = 0.2  # a new column per step: 5 Hz is smooth, 15 Hz costs a core
NONFINITE: Final = -1
EMPTY: Final = -2
_NONFINITE_RGB: Final = (255, 0, 255)


def _palette() -> list[tuple[int, int, int]]:
    out = []
    for k in range(LEVELS):
        x = k / (LEVELS - 1) * (len(_ANCHORS) - 1)
        i = min(int(x), len(_ANCHORS) - 2)
        f = x - i
        a, b = _ANCHORS[i], _ANCHORS[i + 1]
        out.append(
            (
                round(a[0] + (b[0] - a[0]) * f),
                round(a[1] + (b[1] - a[1]) * f),
                round(a[2] + (b[2] - a[2]) * f),
            )
        )
    return out


PALETTE: Final = _palette()


def _rgb(level: int) -> tuple[int, int, int] | None:
    if level == EMPTY:
        return None
    if level == NONFINITE:
        return _NONFINITE_RGB
    return PALETTE[level]


@lru_cache(maxsize=1024)
def _cell_style(upper: int, lower: int) -> Style:
    fg, bg = _rgb(upper), _rgb(lower)
    return Style(
        color=Color.from_rgb(*fg) if fg else None,
        bgcolor=Color.from_rgb(*bg) if bg else None,
    )


def quantize(
    history: npt.NDArray[np.float32], bins: int
) -> tuple[npt.NDArray[np.int16], float, float]:
    """Map ``[time, layers]`` values to palette levels per ``[bin, time]``.

    Layers are grouped into at most ``bins`` consecutive bins (mean of log10 within a bin); a bin
    with any non-finite value is ``NONFINITE``. Returns (levels, lo, hi) with lo/hi in log10.
    """
    t, n = history.shape
    if t == 0 or n == 0 or bins <= 0:
        return np.full((0, t), EMPTY, np.int16), math.nan, math.nan
    h = history.astype(np.float64)
    nonfinite = ~np.isfinite(h)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(h > 0, h, np.nan))
    nb = min(bins, n)
    edges = np.linspace(0, n, nb + 1).astype(int)
    binned = np.full((nb, t), np.nan)
    bad = np.zeros((nb, t), bool)
    for b in range(nb):
        lo_i, hi_i = edges[b], max(edges[b + 1], edges[b] + 1)
        block = logs[:, lo_i:hi_i]
        finite = np.isfinite(block)
        counts = finite.sum(axis=1)
        sums = np.where(finite, block, 0.0).sum(axis=1)
        binned[b] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        bad[b] = nonfinite[:, lo_i:hi_i].any(axis=1)
    ok = binned[np.isfinite(binned)]
    if len(ok) == 0:
        levels = np.where(bad, NONFINITE, EMPTY).astype(np.int16)
        return levels, math.nan, math.nan
    lo, hi = float(ok.min()), float(ok.max())
    span = hi - lo if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        scaled = np.clip((binned - lo) / span * (LEVELS - 1), 0, LEVELS - 1)
    levels = np.where(np.isfinite(binned), scaled, EMPTY).astype(np.int16)
    levels[bad] = NONFINITE
    return levels, lo, hi


class Heatmap(Widget):
    """Draws the selected run's recent grad RMS per parameter layer; legend on the last line."""

    DEFAULT_CSS = """
    Heatmap { height: 1fr; min-height: 4; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.frame: LayerFrame | None = None
        self._levels: npt.NDArray[np.int16] = np.zeros((0, 0), np.int16)
        self._range = (math.nan, math.nan)
        self._layers = 0
        self._key: tuple[object, ...] = ()
        self._at = 0.0
        self._pending = False

    def update_frame(self, frame: LayerFrame | None) -> None:
        self.frame = frame
        self._recompute()

    def flush(self) -> None:
        """Draw a throttled update once its interval has passed (called every frame tick)."""
        if self._pending:
            self._recompute()

    def on_resize(self) -> None:
        self._recompute(force=True)

    def _recompute(self, force: bool = False) -> None:
        frame = self.frame
        width, height = self.size.width, self.size.height
        key = (frame.run if frame else None, frame.version if frame else -1, width, height)
        if key == self._key:
            return
        # New steps of the same run at the same size are throttled; a switch or resize draws now.
        now = time.monotonic()
        same_view = bool(self._key) and key[0] == self._key[0] and key[2:] == self._key[2:]
        if same_view and not force and now - self._at < REFRESH_S:
            self._pending = True
            return
        self._at, self._pending = now, False
        self._key = key
        if frame is None or width <= 0 or height < 2:
            self._levels = np.zeros((0, 0), np.int16)
            self.refresh()
            return
        params = [i for i, r in enumerate(frame.roles) if r == "param"]
        hist = frame.history[-width:, params] if params else frame.history[-width:, :0]
        self._layers = len(params)
        rows = 2 * (height - 1)
        levels, lo, hi = quantize(hist, rows)
        if len(levels):
            # Few layers: stretch each over several half-rows so the panel is filled.
            levels = np.repeat(levels, max(1, rows // len(levels)), axis=0)
        self._levels = levels
        self._range = (lo, hi)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == self.size.height - 1:
            return self._legend(width)
        levels = self._levels
        upper_row, lower_row = 2 * y, 2 * y + 1
        if levels.shape[0] == 0 or upper_row >= levels.shape[0]:
            if y == 0 and levels.shape[0] == 0:
                msg = "waiting for steps…" if self.frame is not None else "no run selected"
                return Strip([Segment(msg, Style(dim=True))]).crop_extend(0, width, None)
            return Strip.blank(width)
        upper = levels[upper_row]
        lower = levels[lower_row] if lower_row < levels.shape[0] else np.full_like(upper, EMPTY)
        segments = [
            Segment("▀", _cell_style(int(u), int(lo))) for u, lo in zip(upper, lower, strict=True)
        ]
        # Runs of equal cells become one segment: Textual's per-segment work dominates a frame.
        return Strip(segments).simplify().crop_extend(0, width, None)

    def _legend(self, width: int) -> Strip:
        lo, hi = self._range
        text = Text(no_wrap=True, end="")
        text.append("in↑ ", "dim")
        text.append(fmt_num(10**lo) if math.isfinite(lo) else "-", "dim")
        text.append(" ")
        for rgb in PALETTE[:: max(1, LEVELS // 8)]:
            text.append("█", Style(color=Color.from_rgb(*rgb)))
        text.append(" ")
        text.append(fmt_num(10**hi) if math.isfinite(hi) else "-", "dim")
        text.append(" ")
        text.append("nan", Style(color=Color.from_rgb(*_NONFINITE_RGB)))
        text.append(f" {self._layers}L", "dim")
        return Strip(list(text.render(self.app.console, end=""))).crop_extend(0, width, None)
