"""What the compare view paints, copied out of the ``Fleet`` in one short lock hold.

Pure numpy (no Textual): the depth profile, loss curves, heatmap rows, config differences and
the one colour scale shared by every run's heatmap are computed here so they can be tested
without a terminal. Values from the wire may be NaN/Inf: everything a plot gets is finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gradtui.state import Fleet, Liveness, RunState
from gradtui.tui.snapshot import alerts_of, column_history

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MAX_COMPARE: Final = 4
"""At most this many runs side by side (what fits in one terminal)."""
HEAT_HISTORY: Final = 240
"""Full-resolution steps the heatmaps and the window average look back over."""


@dataclass(frozen=True, slots=True)
class AlertLine:
    """One active alert, reduced to what a run card shows."""

    severity: str
    rule: str
    message: str
    remedy: str


@dataclass(frozen=True, slots=True)
class CompareRun:
    """One run's column of the compare view (a copy: safe to read without the lock)."""

    run: str
    name: str
    """Untrusted (from the wire): render with ``gradtui.tui.text.plain``."""
    status: str
    step: int
    loss: float
    acc: float
    config: Mapping[str, object]
    alerts: tuple[AlertLine, ...]
    depth_names: tuple[str, ...]
    """The weight layers (Linear/Conv...), input side first: the x axis of the depth profile."""
    latest: F64
    """Latest grad RMS per depth layer (may hold NaN/Inf)."""
    window: F64
    """Geometric mean over the recent window per depth layer (NaN where nothing finite)."""
    nonfinite: int
    """Non-finite gradient values in the latest step (entries, or layers when not counted)."""
    loss_steps: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    loss_values: F64 = field(default_factory=lambda: np.zeros(0))
    heat_steps: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    heat: F32 = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    """Recent grad RMS as ``[time, depth layers]``, raw (may hold NaN/Inf)."""
    version: int = 0


def depth_rows(run: RunState) -> list[int]:
    """Rows that count as depth: parameter layers other than normalisation layers.

    With ``--bn`` a run has twice as many parameter rows as without; leaving the BatchNorm rows
    out keeps "layer index" comparable between a plain run and a fixed one.
    """
    rows = [i for i, li in enumerate(run.layers) if li.role == "param" and "Norm" not in li.kind]
    return rows or [i for i, li in enumerate(run.layers) if li.role == "param"]


def _grad_column(run: RunState) -> str:
    return "grad_rms" if run.column("grad_rms") >= 0 else "grad_norm"


def log10_positive(values: npt.ArrayLike) -> F64:
    """``log10`` where finite and > 0, NaN elsewhere (no warnings)."""
    arr = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(arr) & (arr > 0)
    out = np.full(arr.shape, np.nan)
    out[ok] = np.log10(arr[ok])
    return out


def geometric_window_mean(history: npt.ArrayLike) -> F64:
    """Per column of ``[time, layers]``: the geometric mean of the finite positive values."""
    logs = log10_positive(history)
    if logs.ndim != 2 or logs.shape[0] == 0:
        return np.full(logs.shape[-1] if logs.ndim == 2 else 0, np.nan)
    counts = np.sum(np.isfinite(logs), axis=0)
    sums = np.nansum(logs, axis=0)
    out = np.full(logs.shape[1], np.nan)
    has = counts > 0
    out[has] = 10.0 ** (sums[has] / counts[has])
    return out


def _status(run: RunState, now: float, fleet: Fleet) -> str:
    live = run.liveness(now, fleet.policy)
    if live is Liveness.ENDED and run.end is not None:
        return run.end.status
    return str(live)


def _alerts(run: RunState) -> tuple[AlertLine, ...]:
    active, _ = alerts_of(run)
    out = [
        AlertLine(
            severity=str(getattr(a, "severity", "")),
            rule=str(getattr(a, "rule", "")),
            message=str(getattr(a, "message", "")),
            remedy=str(getattr(a, "remedy", "")),
        )
        for a in active
    ]
    order = {"critical": 0, "warning": 1}
    return tuple(sorted(out, key=lambda a: order.get(a.severity, 2)))


def _nonfinite(run: RunState, rows: Sequence[int]) -> int:
    latest = run.latest
    if latest is None:
        return 0
    j = run.column("grad_nonfinite")
    if j >= 0:
        counts = latest.stats[list(rows), j].astype(np.float64)
        return int(np.nansum(np.where(np.isfinite(counts), counts, 0.0)))
    g = run.column(_grad_column(run))
    if g < 0:
        return 0
    return int(np.sum(~np.isfinite(latest.stats[list(rows), g])))


def compare_run(run: RunState, now: float, fleet: Fleet, history: int = HEAT_HISTORY) -> CompareRun:
    """Copy one run's compare data (call under ``fleet.lock``)."""
    rows = depth_rows(run)
    col = _grad_column(run)
    steps, hist = column_history(run, col, history)
    hist_rows = hist[:, rows] if hist.size else np.zeros((len(steps), len(rows)), np.float32)
    latest = run.current(col)[rows].astype(np.float64) if rows else np.zeros(0)
    loss_steps, loss = run.scalar("loss")
    _, acc = run.scalar("acc", recent=1)
    lat = run.latest
    return CompareRun(
        run=run.run,
        name=run.name,
        status=_status(run, now, fleet),
        step=lat.step if lat is not None else -1,
        loss=lat.loss if lat is not None else math.nan,
        acc=float(acc[-1]) if len(acc) else math.nan,
        config=run.config,
        alerts=_alerts(run),
        depth_names=tuple(run.layers[i].name for i in rows),
        latest=latest,
        window=geometric_window_mean(hist_rows),
        nonfinite=_nonfinite(run, rows),
        loss_steps=np.asarray(loss_steps, dtype=np.int64),
        loss_values=np.asarray(loss, dtype=np.float64),
        heat_steps=np.asarray(steps, dtype=np.int64),
        heat=np.array(hist_rows, dtype=np.float32),
        version=run.version,
    )


def compare_runs(fleet: Fleet, runs: Sequence[str], now: float) -> list[CompareRun]:
    """Copies of the chosen runs that still exist, in the given order (one lock hold)."""
    with fleet.lock:
        return [compare_run(fleet.runs[r], now, fleet) for r in runs if r in fleet.runs]


# ----------------------------------------------------------------------------- derived


def finite_points(x: npt.ArrayLike, y: npt.ArrayLike, *, positive: bool) -> tuple[F64, F64]:
    """The (x, y) pairs a plot can take: finite, and > 0 on a log axis."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if positive:
        ok &= ya > 0
    return xa[ok], ya[ok]


def shared_scale(heats: Sequence[npt.ArrayLike]) -> tuple[float, float]:
    """One ``(low, high)`` in log10 units for every heatmap, so equal colours mean equal values.

    ``heats`` are raw values (any shape); non-finite and non-positive ones are ignored.

    Uses the 1st and 99th percentiles of all finite values, so one extreme outlier (the step a
    run exploded) does not wash every other cell into a single colour.
    """
    parts = [log10_positive(h).ravel() for h in heats]
    finite = np.concatenate([p[np.isfinite(p)] for p in parts]) if parts else np.zeros(0)
    if finite.size == 0:
        return (-8.0, 0.0)
    lo, hi = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every config (a missing key counts as different).

    Keys that identify a run rather than configure it (its name, endpoint) are left out.
    """
    if len(configs) < 2:
        return []
    ignore = {"name", "endpoint", "quiet", "record", "record_dir", "log_every"}
    keys: list[str] = []
    for cfg in configs:
        keys.extend(k for k in cfg if k not in keys and k not in ignore)
    missing = object()
    return [k for k in keys if len({repr(c.get(k, missing)) for c in configs}) > 1]


def fmt_config_value(value: object) -> str:
    """A config value as a short string (``on``/``off`` for booleans, ``-`` for None)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
