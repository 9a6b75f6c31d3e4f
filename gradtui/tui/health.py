"""Cell colours: how healthy a value looks. Mirrors the alert rules' thresholds for the eye.

The alert engine decides what *fires*; this only colours cells, per value, with no memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradtui.tui.text import NONFINITE_STYLE

GOOD = "green"
WARN = "yellow"
BAD = "bold red"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Colour thresholds; ``watch`` fills them from the same flags/config as the alert rules."""

    vanish_ratio: float = 1e-3
    """Layer grad RMS below this fraction of the largest layer's: vanishing (red)."""
    vanish_floor: float = 1e-10
    """Absolute grad RMS below which a layer is vanishing whatever the others do."""
    explode_ceiling: float = 1e3
    """Absolute grad RMS above which a layer is exploding."""
    update_low: float = 1e-5
    """Update ratio below this: the layer has stopped learning."""
    update_high: float = 1e-1
    """Update ratio above this: steps far too large."""
    saturated: float = 0.5
    dead: float = 0.5


def grad_style(value: float, largest: float, th: Thresholds) -> str:
    """Colour of a layer's grad RMS given the largest layer's in the same step."""
    if not math.isfinite(value):
        return NONFINITE_STYLE
    if value > th.explode_ceiling:
        return BAD
    if value < th.vanish_floor:
        return BAD
    if largest > 0 and math.isfinite(largest):
        ratio = value / largest
        if ratio < th.vanish_ratio:
            return BAD
        if ratio < th.vanish_ratio * 10:
            return WARN
    return GOOD


def update_style(value: float, th: Thresholds) -> str:
    if not math.isfinite(value):
        return NONFINITE_STYLE
    if value < th.update_low or value > th.update_high:
        return BAD
    if value < th.update_low * 10 or value > th.update_high / 10:
        return WARN
    return GOOD


def fraction_style(value: float, limit: float) -> str:
    if not math.isfinite(value):
        return NONFINITE_STYLE
    if value > limit:
        return BAD
    if value > limit / 2:
        return WARN
    return GOOD
