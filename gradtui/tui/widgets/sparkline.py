"""Tiny block-character sparklines that accept anything (NaN, Inf, zeros, negatives).

Textual's ``Sparkline`` raises on NaN/Inf (DESIGN §8); this renders them as a visible mark.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from rich.text import Text

from gradtui.tui.text import NONFINITE_STYLE

BARS: Final = "▁▂▃▄▅▆▇█"


def sparkline(values: npt.ArrayLike, width: int, *, log: bool = True, style: str = "cyan") -> Text:
    """The last ``width`` values as bars scaled to their own range; non-finite shown as ``!``.

    Args:
        values: the series, oldest first.
        width: characters; shorter series are right-aligned.
        log: scale by log10 (non-positive values count as missing).
        style: bar colour.
    """
    arr = np.asarray(values, dtype=np.float64)[-width:] if width > 0 else np.zeros(0)
    text = Text(" " * (width - len(arr)), no_wrap=True, end="")
    if len(arr) == 0:
        return text
    bad = ~np.isfinite(arr)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.log10(np.where(arr > 0, arr, np.nan)) if log else np.where(bad, np.nan, arr)
    missing = ~np.isfinite(scaled)
    ok = scaled[~missing]
    lo, hi = (float(ok.min()), float(ok.max())) if len(ok) else (0.0, 0.0)
    span = hi - lo
    for v, is_bad, is_missing in zip(scaled, bad, missing, strict=True):
        if is_bad:
            text.append("!", NONFINITE_STYLE)
        elif is_missing:
            text.append(" ")
        else:
            level = int((v - lo) / span * (len(BARS) - 1)) if span > 0 else 3
            text.append(BARS[level], style)
    return text
