"""The alert engine: one per run, a ``StepObserver`` that ``Fleet`` calls after every step.

Every rule follows one state machine. A condition must hold on ``consecutive`` published steps
in a row to fire (``first_step`` is the first of them). While active it is evaluated at relaxed
thresholds (hysteresis) and clears only after ``clear_after`` steps in a row without it, so a
signal wobbling around a threshold gives one long episode, not a flapping alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from gradtui.alerts import rules as r
from gradtui.alerts.config import RULES, AlertConfig
from gradtui.alerts.messages import REMEDY, SEVERITY, Severity, describe

if TYPE_CHECKING:
    from gradtui.state import LatestStep, RunState

MAX_HISTORY: Final = 1000
# Rules where a smaller value is worse (for the others a larger one is).
_LOWER_IS_WORSE: Final = frozenset({"vanishing", "stalled_updates"})


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert episode: from the step it started to the last step its condition held."""

    rule: str
    """``vanishing``, ``exploding``, ``nonfinite``, ``saturated``, ``dead``,
    ``stalled_updates`` or ``large_updates``."""
    severity: Severity
    first_step: int
    """First step of the ``consecutive`` steps that fired it."""
    last_step: int
    """Last step its condition held."""
    layers: tuple[str, ...]
    """Every layer flagged during the episode, in row order."""
    worst: float
    """The rule's worst value in the episode (units per rule in ``docs/diagnosis.md``)."""
    message: str
    remedy: str
    active: bool


class _Episode:
    """A mutable alert in the making; :class:`Alert` snapshots are built from it on demand."""

    __slots__ = ("active", "fired", "first", "hit", "last", "mask", "names", "rule", "streak")

    def __init__(self, rule: str, step: int, names: tuple[str, ...]) -> None:
        self.rule, self.first, self.last, self.names = rule, step, step, names
        self.mask = np.zeros(len(names), dtype=bool)
        self.hit: r.Hit | None = None
        self.streak = 0
        self.fired = False
        self.active = False

    def update(self, step: int, hit: r.Hit) -> None:
        self.last = step
        self.mask[hit[0]] = True
        old = self.hit
        lower = self.rule in _LOWER_IS_WORSE
        if old is None or (hit[1] < old[1] if lower else hit[1] > old[1]):
            self.hit = hit

    def snapshot(self, cfg: AlertConfig) -> Alert:
        assert self.hit is not None  # an episode is only published after a hit
        flags = self.mask.tolist()
        layers = tuple(n for n, flagged in zip(self.names, flags, strict=True) if flagged)
        return Alert(
            rule=self.rule,
            severity=SEVERITY[self.rule],
            first_step=self.first,
            last_step=self.last,
            layers=layers,
            worst=self.hit[1],
            message=describe(self.rule, self.hit, self.names, len(layers), cfg),
            remedy=REMEDY[self.rule],
            active=self.active,
        )


class AlertEngine:
    """Evaluates every enabled rule on each new step of one run.

    Args:
        config: thresholds (default :class:`AlertConfig()`).
        max_history: episodes kept; beyond it the oldest cleared one is dropped.
    """

    def __init__(self, config: AlertConfig | None = None, max_history: int = MAX_HISTORY) -> None:
        self.config = cfg = config if config is not None else AlertConfig()
        self.max_history = max_history
        self.version = 0
        """Bumped whenever an alert fires, clears or changes (last step, layers, worst)."""
        self.steps_seen = 0
        self._enabled = tuple(rule for rule in RULES if cfg.enabled(rule))
        self._need = dict.fromkeys(RULES, cfg.consecutive)
        self._need["nonfinite"] = 1  # critical: fires at once
        self._need["exploding"] = cfg.exploding_consecutive or cfg.consecutive
        self._window = r.NormWindow(cfg.exploding_window)
        self._layout: r.Layout | None = None
        self._restarts = 0
        self._open: dict[str, _Episode] = {}
        self._quiet = dict.fromkeys(RULES, 0)
        self._episodes: list[_Episode] = []
        self._cache: tuple[int, list[Alert]] = (-1, [])

    @property
    def history(self) -> list[Alert]:
        """Every episode, active and cleared, in first-step order (ties in rule order)."""
        version, alerts = self._cache
        if version != self.version:
            alerts = [ep.snapshot(self.config) for ep in self._episodes]
            alerts.sort(key=lambda a: (a.first_step, RULES.index(a.rule)))
            self._cache = (self.version, alerts)
        return list(alerts)

    @property
    def active(self) -> list[Alert]:
        """The alerts active now, in first-step order."""
        return [a for a in self.history if a.active]

    def observe(self, run: RunState) -> None:
        """Evaluate every enabled rule on ``run.latest``; call once per applied step."""
        latest = run.latest
        if latest is None:
            return
        lay = self._layout
        if (
            lay is None
            or lay.layers is not run.layers
            or lay.columns is not run.columns
            or run.counters.restarts != self._restarts
        ):
            lay = self._relayout(run)
        step = latest.step
        params = latest.stats[lay.dense]  # one gather shared by the per-layer gradient rules
        changed = False
        for rule in self._enabled:
            ep = self._open.get(rule)
            hit = self._evaluate(rule, lay, latest, params, ep is not None and ep.fired)
            changed = self._advance(rule, ep, hit, step, lay) or changed
        self.steps_seen += 1
        if changed:
            self.version += 1

    def _evaluate(
        self, rule: str, lay: r.Layout, latest: LatestStep, params: r.F32, active: bool
    ) -> r.Hit | None:
        cfg, stats = self.config, latest.stats
        if rule == "nonfinite":
            return r.nonfinite(lay, stats, latest)
        if rule == "exploding":
            return r.exploding(lay, stats, latest, cfg, self._window, active)
        margin = cfg.fraction_margin if active else 0.0
        if rule == "saturated":
            return r.fraction_above(lay.sat, lay.saturated, stats, cfg.saturated_fraction - margin)
        if rule == "dead":
            return r.fraction_above(lay.dead, lay.dead_col, stats, cfg.dead_fraction - margin)
        if params.shape[0] == 0:
            return None
        rms = params[:, lay.rms] if lay.rms >= 0 else None
        if rule == "vanishing":
            return r.vanishing(lay, rms, cfg, active) if rms is not None else None
        if lay.update < 0:
            return None
        ratio = params[:, lay.update]
        relax = cfg.hysteresis if active else 1.0
        if rule == "stalled_updates":
            return r.updates(lay, ratio, rms, cfg.stalled_updates_below * relax, below=True)
        return r.updates(lay, ratio, rms, cfg.large_updates_above / relax, below=False)

    def _relayout(self, run: RunState) -> r.Layout:
        old = self._layout
        same = old is not None and old.layers == run.layers and old.columns == run.columns
        if not same or run.counters.restarts != self._restarts:
            # A new schema or a restarted trainer: what was open no longer describes this run.
            for ep in self._open.values():
                ep.active = False
            self._open.clear()
            self._quiet = dict.fromkeys(RULES, 0)
            self._window.clear()
            self.version += 1
        self._restarts = run.counters.restarts
        self._layout = r.Layout(run.layers, run.columns)
        return self._layout

    def _advance(
        self, rule: str, ep: _Episode | None, hit: r.Hit | None, step: int, lay: r.Layout
    ) -> bool:
        """Step one rule's state machine; True when a published alert changed."""
        if hit is not None:
            self._quiet[rule] = 0
            if ep is None:
                ep = self._open[rule] = _Episode(rule, step, lay.names)
            ep.update(step, hit)
            if ep.fired:
                return True
            ep.streak += 1
            if ep.streak < self._need[rule]:
                return False
            ep.fired = ep.active = True
            self._episodes.append(ep)
            if len(self._episodes) > self.max_history:
                drop = next((e for e in self._episodes if not e.active), self._episodes[0])
                self._episodes.remove(drop)
            return True
        if ep is None:
            return False
        if not ep.fired:  # the streak broke before it fired
            del self._open[rule]
            return False
        self._quiet[rule] += 1
        if self._quiet[rule] < self.config.clear_after:
            return False
        ep.active = False
        del self._open[rule]
        self._quiet[rule] = 0
        return True


def worst_value(alerts: list[Alert], rule: str) -> float:
    """The worst value of ``rule`` over ``alerts`` (NaN when it never fired)."""
    values = [a.worst for a in alerts if a.rule == rule]
    if not values:
        return math.nan
    return min(values) if rule in _LOWER_IS_WORSE else max(values)
