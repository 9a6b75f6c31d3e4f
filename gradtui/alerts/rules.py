"""The rule conditions: one vectorised function per rule over the latest stats matrix.

Each returns ``None`` (condition false this step) or a :data:`Hit`. ``active`` selects the
relaxed (hysteresis) thresholds used while the rule's alert is active. Rows and columns are
looked up by name once per schema (:class:`Layout`); a missing column skips the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from gradtui.alerts.config import AlertConfig

if TYPE_CHECKING:
    from gradtui.protocol import LayerInfo
    from gradtui.state import LatestStep

Rows: TypeAlias = npt.NDArray[np.intp]
F32: TypeAlias = npt.NDArray[np.float32]
Hit: TypeAlias = tuple[Rows, float, int, float, float]
"""(flagged rows, worst value, worst row or -1, two rule-specific numbers for the message)."""

SATURATING_KINDS: Final = frozenset({"Sigmoid", "Tanh", "Hardsigmoid", "Hardtanh", "Softsign"})
RELU_KINDS: Final = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "GELU", "SiLU", "ELU", "CELU", "SELU"}
    | {"Mish", "Hardswish"}
)
SPARSE_KINDS: Final = frozenset({"Embedding", "EmbeddingBag"})
"""Param rows whose gradient RMS is small by nature (untouched rows count as zeros): not judged
by the vanishing and update-ratio rules."""
_NO_ROWS: Final = np.zeros(0, dtype=np.intp)


class Layout:
    """Row and column indices of one (layers, columns) schema, computed once per schema."""

    def __init__(self, layers: tuple[LayerInfo, ...], columns: tuple[str, ...]) -> None:
        self.layers, self.columns = layers, columns
        self.names = tuple(li.name for li in layers)

        def rows(keep: Callable[[LayerInfo], bool]) -> Rows:
            return np.array([i for i, li in enumerate(layers) if keep(li)], dtype=np.intp)

        self.param = rows(lambda li: li.role == "param")
        self.dense = rows(lambda li: li.role == "param" and li.kind not in SPARSE_KINDS)
        self.sat = rows(lambda li: li.role == "act" and li.kind in SATURATING_KINDS)
        self.dead = rows(lambda li: li.role == "act" and li.kind in RELU_KINDS)
        col = {c: j for j, c in enumerate(columns)}
        self.rms = col.get("grad_rms", -1)
        self.norm = col.get("grad_norm", -1)
        self.nonfinite = col.get("grad_nonfinite", -1)
        self.update = col.get("update_ratio", -1)
        self.saturated = col.get("act_saturated", -1)
        self.dead_col = col.get("act_dead", -1)


class NormWindow:
    """The last ``size`` finite total gradient norms, for the exploding rule's median."""

    def __init__(self, size: int) -> None:
        self._values = np.zeros(size, dtype=np.float64)
        self.count = 0

    def push(self, value: float) -> None:
        self._values[self.count % self._values.size] = value
        self.count += 1

    def median(self) -> float:
        held = self._values[: min(self.count, self._values.size)]
        if held.size == 0:
            return math.nan
        return float(np.partition(held, held.size // 2)[held.size // 2])

    def clear(self) -> None:
        self.count = 0


def nonfinite(lay: Layout, stats: F32, latest: LatestStep) -> Hit | None:
    """Any Inf in the stats, a positive non-finite count, a non-finite loss or an Inf norm.

    NaN in a stats cell means "not applicable" (protocol) and a NaN ``grad_norm`` means "not
    reported", so those alone do not fire; a NaN gradient shows up in ``grad_nonfinite``.
    """
    bad_loss = not math.isfinite(latest.loss)
    bad_norm = math.isinf(latest.grad_norm)
    inf_cells = np.isinf(stats)
    counts = stats[:, lay.nonfinite] if lay.nonfinite >= 0 and stats.shape[0] else None
    any_count = counts is not None and bool(np.fmax.reduce(counts) > 0)
    if not (bad_loss or bad_norm or any_count or inf_cells.any()):
        return None
    bad_rows = inf_cells.any(axis=1)
    total = float(inf_cells.sum()) + bad_loss + bad_norm
    if counts is not None and any_count:
        positive = counts > 0
        bad_rows |= positive
        total += float(np.minimum(counts[positive], 3e38).sum(dtype=np.float64))
    rows = np.flatnonzero(bad_rows)
    first = int(rows[0]) if rows.size else -1
    return rows, total, first, latest.loss, latest.grad_norm


def exploding(
    lay: Layout, stats: F32, latest: LatestStep, cfg: AlertConfig, window: NormWindow, active: bool
) -> Hit | None:
    """Total gradient norm above ``factor`` x its recent median, or above ``ceiling``.

    Every finite norm joins the window after it is judged, so a lasting change of scale stops
    being "exploding" once the median catches up (about ``window / 2`` steps).
    """
    g = latest.grad_norm
    if math.isnan(g) and lay.norm >= 0 and lay.param.size:
        # Not reported by the loop: rebuild it from the per-layer norms.
        with np.errstate(over="ignore", invalid="ignore"):
            g = float(np.sqrt(np.sum(np.square(stats[lay.param, lay.norm], dtype=np.float64))))
    if math.isnan(g):
        return None
    relax = cfg.hysteresis if active else 1.0
    median = math.nan
    fired = g > cfg.exploding_ceiling / relax
    if not fired and window.count >= cfg.exploding_min_history:
        median = window.median()
        fired = median > 0 and g > median * cfg.exploding_factor / relax
    if math.isfinite(g):
        window.push(g)
    if not fired:
        return None
    row = -1
    if lay.norm >= 0 and lay.param.size:
        norms = stats[lay.param, lay.norm]
        if not np.isnan(norms).all():
            row = int(lay.param[int(np.nanargmax(norms))])
    rows = np.array([row], dtype=np.intp) if row >= 0 else _NO_ROWS
    return rows, g, row, median, cfg.exploding_ceiling


def vanishing(lay: Layout, rms: F32, cfg: AlertConfig, active: bool) -> Hit | None:
    """A param row's gradient RMS below ``ratio`` x the largest row's, or below ``floor``.

    ``rms`` is the grad_rms column of the dense param rows (``Layout.dense``). Rows with no
    gradient (0 or NaN) or a broken one (Inf) are not judged.
    """
    relax = cfg.hysteresis if active else 1.0
    ratio, floor = min(cfg.vanishing_ratio * relax, 1.0), cfg.vanishing_floor * relax
    lo, hi = float(np.fmin.reduce(rms)), float(np.fmax.reduce(rms))  # NaN-ignoring
    if lo > 0 and hi < math.inf:
        # Every judged row is positive and finite (NaN rows compare False below).
        limit = max(hi * ratio, floor)
        if lo >= limit:
            return None  # the common, healthy case: two reductions
        top, low = hi, rms < limit
    else:
        ok = (rms > 0) & (rms < np.inf)
        if not ok.any():
            return None
        top = float(rms[ok].max())
        low = ok & (rms < max(top * ratio, floor))
        if not low.any():
            return None
    rows = lay.dense[low]
    values = rms[low]
    i = int(values.argmin())
    return rows, float(values[i]) / top, int(rows[i]), float(values[i]), top


def fraction_above(rows: Rows, col: int, stats: F32, limit: float) -> Hit | None:
    """Act rows whose fraction column (saturated / dead) is above ``limit``."""
    if col < 0 or rows.size == 0:
        return None
    values = stats[rows, col]
    if not np.fmax.reduce(values) > limit:  # NaN-ignoring: "not applicable" cells
        return None
    high = values > limit
    flagged, kept = rows[high], values[high]
    i = int(kept.argmax())
    return flagged, float(kept[i]), int(flagged[i]), limit, 0.0


def updates(lay: Layout, ratio: F32, rms: F32 | None, limit: float, below: bool) -> Hit | None:
    """Param rows (with a gradient) whose update ratio is below / above ``limit``.

    ``ratio`` and ``rms`` are the update_ratio and grad_rms columns of the dense param rows.
    """
    edge = float(np.fmin.reduce(ratio) if below else np.fmax.reduce(ratio))
    if not (edge < limit if below else edge > limit):
        return None
    has_grad = rms > 0 if rms is not None else np.isfinite(ratio)
    flag = has_grad & ((ratio < limit) if below else (ratio > limit))
    if not flag.any():
        return None
    rows, values = lay.dense[flag], ratio[flag]
    i = int(values.argmin() if below else values.argmax())
    return rows, float(values[i]), int(rows[i]), limit, 0.0
