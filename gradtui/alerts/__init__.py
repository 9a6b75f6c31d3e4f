"""Diagnosis rules: turn each published step's stats into alerts with plain-words remedies.

Pure Python + numpy: no sockets, no UI, no torch. ``docs/diagnosis.md`` defines every rule, its
defaults, their calibration on real trainer runs and the config file format.

- :mod:`.config`: :class:`AlertConfig` (thresholds) and :func:`load_config` (TOML);
- :mod:`.rules`: one vectorised condition per rule;
- :mod:`.messages`: severities, remedies, messages;
- :mod:`.engine`: :class:`AlertEngine`, the per-run state machine (a ``StepObserver``).
"""

from __future__ import annotations

from gradtui.alerts.config import RULES, AlertConfig, config_from_mapping, load_config
from gradtui.alerts.engine import Alert, AlertEngine, worst_value
from gradtui.alerts.messages import REMEDY, SEVERITY, Severity

__all__ = [
    "REMEDY",
    "RULES",
    "SEVERITY",
    "Alert",
    "AlertConfig",
    "AlertEngine",
    "Severity",
    "config_from_mapping",
    "load_config",
    "worst_value",
]
