"""Copies of what the widgets paint, taken from ``Fleet`` under its lock in one short hold.

Widgets never touch ``RunState`` directly: the receive thread mutates it concurrently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradtui.state import Fleet, Liveness, RunState

F32 = npt.NDArray[np.float32]
EMPTY = np.zeros(0, np.float32)


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the run list."""

    run: str
    name: str
    status: str
    """live / idle / stale / waiting, or ``ended`` with the final status (``finished``...)."""
    step: int
    loss: float
    steps_per_s: float
    critical: int
    warnings: int
    source: str


@dataclass(frozen=True, slots=True)
class LayerFrame:
    """What the layer table, heatmap and plots need of the selected run."""

    run: str
    version: int
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    roles: tuple[str, ...]
    grad: F32
    """Current grad RMS per layer (grad norm when the run has no RMS column)."""
    grad_label: str
    signal: F32
    update: F32
    saturated: F32
    dead: F32
    steps: npt.NDArray[np.int64]
    history: F32
    """``[time, layers]`` recent grad RMS (same column as ``grad``)."""
    loss_steps: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    loss: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    step: int = -1


def column_history(run: RunState, column: str, recent: int) -> tuple[npt.NDArray[np.int64], F32]:
    """The last ``recent`` full-resolution values of one column (only that column is copied)."""
    return run.series(column, recent=max(0, recent))


def alerts_of(run: RunState) -> tuple[list[Any], list[Any]]:
    """(active, history) alerts of a run's observer; empty when it has no alert engine."""
    obs = run.observer
    active = list(getattr(obs, "active", ()) or ())
    history = list(getattr(obs, "history", ()) or ())
    return active, history


def _steps_per_s(run: RunState) -> float:
    steps, t = run.scalar("t", recent=32)
    if len(steps) < 2 or not (math.isfinite(t[-1]) and math.isfinite(t[0])) or t[-1] <= t[0]:
        return math.nan
    return float(steps[-1] - steps[0]) / float(t[-1] - t[0])


def run_row(run: RunState, now: float, fleet: Fleet) -> RunRow:
    live = run.liveness(now, fleet.policy)
    status = str(live)
    if live is Liveness.ENDED and run.end is not None:
        status = run.end.status
    active, _ = alerts_of(run)
    critical = sum(1 for a in active if getattr(a, "severity", "") == "critical")
    latest = run.latest
    return RunRow(
        run=run.run,
        name=run.name,
        status=status,
        step=latest.step if latest is not None else -1,
        loss=latest.loss if latest is not None else math.nan,
        steps_per_s=_steps_per_s(run),
        critical=critical,
        warnings=len(active) - critical,
        source=run.source,
    )


def run_rows(fleet: Fleet, now: float) -> list[RunRow]:
    with fleet.lock:
        return [run_row(r, now, fleet) for r in fleet.runs.values()]


def _col(run: RunState, name: str) -> F32:
    return np.array(run.current(name), dtype=np.float32)


def layer_frame(run: RunState, history: int) -> LayerFrame:
    """Copy the selected run's per-layer values (call under ``fleet.lock``)."""
    grad_col = "grad_rms" if run.column("grad_rms") >= 0 else "grad_norm"
    steps, hist = column_history(run, grad_col, history)
    loss_steps, loss = run.scalar("loss")
    return LayerFrame(
        run=run.run,
        version=run.version,
        names=tuple(li.name for li in run.layers),
        kinds=tuple(li.kind for li in run.layers),
        roles=tuple(li.role for li in run.layers),
        grad=_col(run, grad_col),
        grad_label="grad RMS" if grad_col == "grad_rms" else "grad norm",
        signal=_col(run, "out_grad_norm"),
        update=_col(run, "update_ratio"),
        saturated=_col(run, "act_saturated"),
        dead=_col(run, "act_dead"),
        steps=steps,
        history=hist,
        loss_steps=loss_steps,
        loss=loss,
        step=run.latest.step if run.latest is not None else -1,
    )
