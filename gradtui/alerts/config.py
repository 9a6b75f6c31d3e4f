"""Thresholds of the alert rules: the :class:`AlertConfig` dataclass and its TOML loader.

Pure Python (``tomllib``); ``docs/diagnosis.md`` documents every key and how the defaults were
calibrated. A config file's top level holds the general keys; each rule has its own table whose
keys map to ``<rule>_<key>`` fields, e.g. ``[vanishing] ratio = 1e-4`` -> ``vanishing_ratio``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from gradtui.errors import GradtuiError

RULES: Final[tuple[str, ...]] = (
    "nonfinite",
    "exploding",
    "vanishing",
    "saturated",
    "dead",
    "stalled_updates",
    "large_updates",
)
"""Every rule name, in the order alerts are listed when they share a first step."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertConfig:
    """Every threshold of the alert rules. Build from TOML with :func:`load_config`."""

    consecutive: int = 3
    """Published steps a condition must hold before its alert fires (``nonfinite``: always 1)."""
    clear_after: int = 10
    """Published steps a condition must be false (at the relaxed threshold) before it clears."""
    hysteresis: float = 2.0
    """While active, magnitude thresholds are relaxed by this factor (x or /) before clearing."""
    fraction_margin: float = 0.1
    """While active, fraction thresholds (saturated, dead) are relaxed by this much."""
    disabled: tuple[str, ...] = ()
    """Rules that are never evaluated."""

    vanishing_ratio: float = 1e-3
    """A param layer whose gradient RMS is below this x the largest layer's (same step)."""
    vanishing_floor: float = 1e-10
    """... or below this absolute gradient RMS."""

    exploding_factor: float = 100.0
    """Total gradient norm above this x its recent median ..."""
    exploding_ceiling: float = 1e3
    """... or above this absolute norm."""
    exploding_window: int = 50
    """Published steps in the median's window."""
    exploding_min_history: int = 5
    """Steps in the window before the median test applies (the ceiling applies at once)."""
    exploding_consecutive: int = 0
    """Own ``consecutive`` for exploding; 0 uses ``consecutive``."""

    saturated_fraction: float = 0.5
    """Sigmoid/Tanh outputs within the probe's margin of their bounds, above this fraction."""
    dead_fraction: float = 0.5
    """ReLU-family units zero for the whole batch, above this fraction."""

    stalled_updates_below: float = 1e-7
    """Update ratio ||dw|| / ||w|| below this (healthy is ~1e-3)."""
    large_updates_above: float = 0.3
    """Update ratio above this."""

    def with_overrides(self, **flags: Any) -> AlertConfig:
        """A copy with the given fields replaced; ``None`` values are ignored (unset CLI flags).

        Raises:
            GradtuiError: (code 2) an unknown field, a wrong type or an out-of-range value.
        """
        changes = {k: v for k, v in flags.items() if v is not None}
        for key, value in changes.items():
            _check(key, value, key)
        if "disabled" in changes:
            changes["disabled"] = tuple(changes["disabled"])
        out = dataclasses.replace(self, **changes)
        _check_consistent(out)
        return out

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled


# (type, low, high, low exclusive) per field; ints are accepted where floats are wanted.
_SPECS: Final[dict[str, tuple[type, float, float, bool]]] = {
    "consecutive": (int, 1, 10_000, False),
    "clear_after": (int, 1, 10_000, False),
    "hysteresis": (float, 1.0, 1e6, False),
    "fraction_margin": (float, 0.0, 1.0, False),
    "vanishing_ratio": (float, 0.0, 1.0, True),
    "vanishing_floor": (float, 0.0, 1e6, False),
    "exploding_factor": (float, 1.0, 1e12, True),
    "exploding_ceiling": (float, 0.0, math.inf, True),
    "exploding_window": (int, 3, 100_000, False),
    "exploding_min_history": (int, 1, 100_000, False),
    "exploding_consecutive": (int, 0, 10_000, False),
    "saturated_fraction": (float, 0.0, 1.0, True),
    "dead_fraction": (float, 0.0, 1.0, True),
    "stalled_updates_below": (float, 0.0, 1e6, False),
    "large_updates_above": (float, 0.0, math.inf, True),
}


def _bad(message: str) -> GradtuiError:
    return GradtuiError(message, code=2)


def _check(key: str, value: Any, where: str) -> None:
    """Validate one field's value; ``where`` names it as the user wrote it."""
    if key == "disabled":
        if not isinstance(value, list | tuple) or not all(isinstance(r, str) for r in value):
            raise _bad(f"{where}: expected a list of rule names")
        unknown = [r for r in value if r not in RULES]
        if unknown:
            raise _bad(f"{where}: unknown rule {unknown[0]!r} (rules: {', '.join(RULES)})")
        return
    spec = _SPECS.get(key)
    if spec is None:
        raise _bad(f"{where}: unknown alert setting")
    typ, low, high, low_open = spec
    ok_types: tuple[type, ...] = (int,) if typ is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        want = "an integer" if typ is int else "a number"
        raise _bad(f"{where}: expected {want}, got {type(value).__name__}")
    number = float(cast(float, value))
    too_low = number <= low if low_open else number < low
    if math.isnan(number) or too_low or number > high:
        lo = "(" if low_open else "["
        raise _bad(f"{where}: {value!r} is out of range {lo}{low:g}, {high:g}]")


def _check_consistent(cfg: AlertConfig) -> None:
    if cfg.large_updates_above <= cfg.stalled_updates_below:
        raise _bad("large_updates.above must be greater than stalled_updates.below")


def config_from_mapping(doc: dict[str, Any], source: str = "config") -> AlertConfig:
    """Build a config from a parsed TOML document (general keys + one table per rule).

    Raises:
        GradtuiError: (code 2) naming the offending key as ``source: table.key``.
    """
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in RULES:
                raise _bad(f"{source}: unknown table [{key}] (rules: {', '.join(RULES)})")
            for sub, sub_value in value.items():
                field = f"{key}_{sub}"
                where = f"{source}: {key}.{sub}"
                if field not in _SPECS:
                    raise _bad(f"{where}: unknown key")
                _check(field, sub_value, where)
                flat[field] = sub_value
        else:
            _check(key, value, f"{source}: {key}")
            flat[key] = tuple(value) if key == "disabled" else value
    cfg = AlertConfig(**flat)
    _check_consistent(cfg)
    return cfg


def load_config(path: str | Path) -> AlertConfig:
    """Read an alert config from a TOML file.

    Raises:
        GradtuiError: (code 2) unreadable file, invalid TOML, unknown key, wrong type or
            out-of-range value, in one line naming the file and key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(f"cannot read alert config {p}: {exc.__class__.__name__}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(f"{p}: invalid TOML: {exc}") from None
    return config_from_mapping(doc, str(p))


__all__ = ["RULES", "AlertConfig", "config_from_mapping", "load_config"]
