"""Severities, remedies and the plain-words message of each rule."""

from __future__ import annotations

import math
from typing import Final, Literal, TypeAlias

from gradtui.alerts.config import AlertConfig
from gradtui.alerts.rules import Hit

Severity: TypeAlias = Literal["info", "warning", "critical"]

SEVERITY: Final[dict[str, Severity]] = {
    "nonfinite": "critical",
    "exploding": "critical",
    "vanishing": "warning",
    "saturated": "warning",
    "dead": "warning",
    "stalled_updates": "info",
    "large_updates": "warning",
}
REMEDY: Final[dict[str, str]] = {
    "nonfinite": "lower the learning rate (--lr) and clip the gradient norm (--clip-norm 1); "
    "the run has to restart from before the blow-up",
    "exploding": "clip the gradient norm (--clip-norm 1) and lower the learning rate (--lr); "
    "BatchNorm (--bn) also steadies the scale",
    "vanishing": "use a non-saturating activation (--act relu), BatchNorm (--bn) or residual "
    "connections (--residual); clipping (--clip-norm) does not help here",
    "saturated": "use --act relu, or --bn to keep pre-activations out of the flat tails",
    "dead": "lower the learning rate (--lr), add --bn, or use --act leaky_relu or --act gelu",
    "stalled_updates": "raise the learning rate (--lr), or fix a vanishing gradient "
    "(--act relu, --bn, --residual)",
    "large_updates": "lower the learning rate (--lr) or clip the gradient norm (--clip-norm 1)",
}


def _g(value: float, digits: int = 2) -> str:
    """Short human numbers: ``100`` and ``2.5`` stay plain, tiny and huge ones go scientific."""
    if 1 <= abs(value) < 1e6:
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{max(digits, 3)}g}"
    return f"{value:.{digits}g}"


def describe(rule: str, hit: Hit, names: tuple[str, ...], count: int, cfg: AlertConfig) -> str:
    """One line about the worst step of an episode; ``count`` layers were flagged in all."""
    _, worst, row, a, b = hit
    name = names[row] if 0 <= row < len(names) else ""
    more = f" (+{count - 1} more layers)" if count > 1 else ""
    if rule == "vanishing":
        floor = f", below the floor {_g(cfg.vanishing_floor)}" if a < cfg.vanishing_floor else ""
        return f"{name} gradient RMS {_g(a)}, {_g(worst)}x the largest layer's{floor}{more}"
    if rule == "exploding":
        text = f"total gradient norm {_g(worst, 3)}"
        if math.isfinite(a) and a > 0:
            text += f", {_g(worst / a)}x its recent median {_g(a, 3)}"
        else:
            text += f", above the ceiling {_g(b)}"
        return text + (f"; largest in {name}" if name else "")
    if rule == "nonfinite":
        parts = []
        if not math.isfinite(a):
            parts.append(f"loss {a}")
        if math.isinf(b):
            parts.append(f"total gradient norm {b}")
        if name:
            parts.append(f"gradient stats of {name}{more}")
        return f"{_g(worst, 6)} non-finite values: " + ", ".join(parts)
    if rule == "saturated":
        return f"{name}: {worst:.0%} of outputs saturated{more}"
    if rule == "dead":
        return f"{name}: {worst:.0%} of units dead (zero for the whole batch){more}"
    if rule == "stalled_updates":
        return f"{name} update ratio {_g(worst)} (healthy ~1e-3): its weights barely move{more}"
    return f"{name} update ratio {_g(worst)} (healthy ~1e-3): each step rewrites it{more}"
