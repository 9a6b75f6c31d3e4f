"""Summaries of recorded runs: replay through ``Fleet`` + ``AlertEngine``, then a verdict.

Pure logic over a :class:`~gradtui.storage.RecordedRun` (SQLite reads, numpy); the command
``gradtui report`` (``gradtui.commands.report``) formats the result.

Long runs are replayed decimated so ten 100,000-step runs summarise in about a second: SQL
aggregates over the small ``steps`` table find the first non-finite loss / norm and the largest
gradient norm, and at most ``max_replay`` stats matrices are replayed: an evenly spaced sample,
the last steps, and the steps around those two. On a decimated replay ``consecutive`` counts
sampled steps; ``docs/diagnosis.md`` explains what that can miss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from gradtui.alerts import Alert, AlertConfig, AlertEngine
from gradtui.protocol import AnyMessage, Hello, Step
from gradtui.state import Fleet

if TYPE_CHECKING:
    from gradtui.storage import RecordedRun

DEFAULT_MAX_REPLAY: Final = 1000
_EDGE_STEPS: Final = 20  # steps at each end for the gradient-ratio medians
_WINDOW: Final = 24  # matrices read around each scalar anomaly
_VERDICT_ORDER: Final = ("nonfinite", "exploding", "vanishing")
_HUGE: Final = "1.7976931348623157e308"  # DBL_MAX: SQLite compares Inf above it


@dataclass(frozen=True, slots=True)
class RunReport:
    """What ``gradtui report`` says about one recorded run."""

    path: str
    run: str
    inc: str
    name: str
    config: dict[str, Any]
    steps: int
    """Recorded (published) steps."""
    first_step: int
    last_step: int
    status: str
    """``finished``, ``interrupted``, ``crashed`` or ``no end`` (live, or killed)."""
    reason: str
    final_loss: float
    final_acc: float
    last_finite_loss: float
    alerts: list[Alert]
    first_layer: str
    last_layer: str
    rms_ratio_start: float
    """Median first/last param layer gradient RMS ratio over the first steps."""
    rms_ratio_end: float
    """... and over the last steps (NaN when unknown)."""
    replayed: int
    """Steps replayed through the alert engine."""
    decimated: bool
    """True when only a sample of the steps was replayed (see the module doc)."""
    verdict: str
    rules: list[str] = field(default_factory=list)
    """Rules that fired, in order of first firing, without repeats."""


def _param_edges(run: RecordedRun) -> tuple[int, int, str, str, int]:
    """(first param row, last param row, their names, grad_rms column) or -1s."""
    hello = run.hello
    if hello is None or "grad_rms" not in hello.columns:
        return -1, -1, "", "", -1
    rows = [i for i, li in enumerate(hello.layers) if li.role == "param"]
    if len(rows) < 2:
        return -1, -1, "", "", -1
    first, last = rows[0], rows[-1]
    return (
        first,
        last,
        hello.layers[first].name,
        hello.layers[last].name,
        hello.columns.index("grad_rms"),
    )


def _ratio(stack: npt.NDArray[np.float32], first: int, last: int, col: int) -> float:
    if first < 0 or stack.shape[0] == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = stack[:, first, col].astype(np.float64) / stack[:, last, col]
    ratios = ratios[np.isfinite(ratios)]
    return float(np.median(ratios)) if ratios.size else math.nan


class _Scalars:
    """Targeted queries on one run's ``steps`` table (format: ``docs/storage.md``).

    Reading every step's scalars through the reader costs ~0.2 s of CPU per 100,000 steps, the
    whole budget for ten runs, so the report asks SQLite for just what it needs: aggregates and
    the scalar rows of the sampled steps. NaN is stored as NULL (the storage format's rule).
    """

    _COLS: Final = "step, seq, t, loss, acc, lr, grad_norm, clipped"

    def __init__(self, run: RecordedRun) -> None:
        self._conn = sqlite3.connect(f"{run.path.resolve().as_uri()}?mode=ro", uri=True)
        found = self._conn.execute(
            "SELECT id FROM runs WHERE run = ? AND inc = ?", (run.run, run.inc)
        ).fetchone()
        self._id = int(found[0]) if found is not None else -1

    def close(self) -> None:
        self._conn.close()

    def one(self, sql: str) -> tuple[Any, ...]:
        row = self._conn.execute(sql.format(cols=self._COLS), {"r": self._id}).fetchone()
        return tuple(row) if row is not None else ()

    def bounds(self) -> tuple[int, int, int]:
        """(count, first step, last step)."""
        n, lo, hi = self.one("SELECT count(*), min(step), max(step) FROM steps WHERE run_id = :r")
        return int(n), int(lo) if n else -1, int(hi) if n else -1

    def first_bad_step(self) -> int | None:
        """First step with a NaN/Inf loss or an Inf total norm (NaN norm: not reported)."""
        row = self.one(
            "SELECT min(step) FROM steps WHERE run_id = :r AND (loss IS NULL"
            f" OR abs(loss) > {_HUGE} OR abs(grad_norm) > {_HUGE})"
        )
        return int(row[0]) if row and row[0] is not None else None

    def max_norm_step(self) -> int | None:
        row = self.one(
            "SELECT step, max(grad_norm) FROM steps WHERE run_id = :r"
            f" AND abs(grad_norm) <= {_HUGE}"
        )
        return int(row[0]) if row and row[0] is not None else None

    def edge(self, last: bool) -> tuple[float, float]:
        """(loss, acc) of the first or last step."""
        order = "DESC" if last else "ASC"
        row = self.one(
            f"SELECT loss, acc FROM steps WHERE run_id = :r ORDER BY step {order} LIMIT 1"
        )
        return (_nan(row[0]), _nan(row[1])) if row else (math.nan, math.nan)

    def nth_step(self, k: int) -> int:
        """The step number of the ``k``-th recorded step (0-based)."""
        row = self.one(f"SELECT step FROM steps WHERE run_id = :r ORDER BY step LIMIT 1 OFFSET {k}")
        return int(row[0]) if row else -1

    def last_finite_loss(self) -> float:
        row = self.one(
            "SELECT loss FROM steps WHERE run_id = :r AND loss IS NOT NULL"
            f" AND abs(loss) <= {_HUGE} ORDER BY step DESC LIMIT 1"
        )
        return float(row[0]) if row else math.nan

    def rows(self, steps: list[int]) -> dict[int, tuple[Any, ...]]:
        """Scalar rows of the given step numbers."""
        cur = self._conn.execute(
            f"SELECT {self._COLS} FROM steps WHERE run_id = ?"
            " AND step IN (SELECT value FROM json_each(?))",
            (self._id, json.dumps(steps)),
        )
        return {int(row[0]): row for row in cur}


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _sampled_steps(run: RecordedRun, sc: _Scalars, budget: int) -> list[Step]:
    """At most ~``budget`` steps, chosen to keep what the rules look for (see module doc)."""
    picked: dict[int, npt.NDArray[np.float32]] = {}

    def take(found: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]) -> None:
        picked.update(zip(found[0].tolist(), found[1], strict=True))

    take(run.overview(max(2, budget - 3 * _WINDOW)))
    last = run.tail(_WINDOW)
    take(last)
    # Steps are not contiguous (``every``): a window is +-_WINDOW/2 published steps around it.
    stride = max(1, int(np.median(np.diff(last[0]))) if last[0].size > 1 else 1)
    for anchor in (sc.first_bad_step(), sc.max_norm_step()):
        if anchor is not None:
            half = stride * (_WINDOW // 2)
            take(run.stats(anchor - half, anchor + half + 1))
    out = []
    rows = sc.rows(sorted(picked))
    for s in sorted(picked):
        if s not in rows:
            continue
        _, seq, t, loss, acc, lr, norm, clipped = rows[s]
        out.append(
            Step(
                run=run.run,
                inc=run.inc,
                seq=int(seq),
                t=float(t),
                step=s,
                loss=_nan(loss),
                acc=_nan(acc),
                lr=_nan(lr),
                grad_norm=_nan(norm),
                clipped=bool(clipped),
                stats=picked[s],
            )
        )
    return out


def _replay(
    run: RecordedRun, sc: _Scalars, config: AlertConfig, max_replay: int | None
) -> tuple[list[Alert], int, bool]:
    """(alerts, steps replayed, decimated?)."""
    fleet = Fleet(observer_factory=lambda: AlertEngine(config))
    decimated = max_replay is not None and run.steps > max_replay
    messages: Iterable[AnyMessage]
    if decimated:
        assert max_replay is not None
        messages = _sampled_steps(run, sc, max_replay)
    else:
        messages = (m for m in run.messages() if not isinstance(m, Hello))
    if run.hello is not None:
        # The recorded hello may be a re-send with a later seq than the first steps (a late
        # joiner recorded steps before it); as seq -1 it cannot make them look like replays.
        fleet.apply(dataclasses.replace(run.hello, seq=-1), now=run.hello.t)
    for msg in messages:
        fleet.apply(msg, now=msg.t)
    state = fleet.runs.get(run.run)
    if state is None or not isinstance(state.observer, AlertEngine):
        return [], 0, decimated
    return state.observer.history, state.counters.steps, decimated


def _verdict(rep_alerts: list[Alert], steps: int, loss0: float, loss1: float, ratio: float) -> str:
    if steps == 0:
        return "EMPTY: no steps recorded"
    fired = {a.rule: a for a in reversed(rep_alerts)}  # earliest episode per rule wins
    for rule in _VERDICT_ORDER:
        a = fired.get(rule)
        if a is None:
            continue
        if rule == "nonfinite":
            return f"BLEW UP: non-finite values from step {a.first_step} (fix: --lr, --clip-norm)"
        if rule == "exploding":
            return (
                f"UNSTABLE: exploding gradients from step {a.first_step} (fix: --clip-norm, --lr)"
            )
        where = f" (input/output layer gradient ratio {ratio:.1e})" if math.isfinite(ratio) else ""
        return (
            f"VANISHING GRADIENTS from step {a.first_step}{where} "
            "(fix: --act relu, --bn, --residual)"
        )
    trend = f"loss {loss0:.3g} -> {loss1:.3g}"
    if fired:
        return f"WARNINGS: {', '.join(sorted(fired))}; {trend}"
    return f"HEALTHY: no alerts in {steps} steps; {trend}"


def summarize(
    run: RecordedRun, config: AlertConfig | None = None, max_replay: int | None = DEFAULT_MAX_REPLAY
) -> RunReport:
    """Replay one recorded run through the alert engine and summarise it.

    Args:
        run: a run from :func:`gradtui.storage.open_recording`.
        config: alert thresholds (default ``AlertConfig()``).
        max_replay: replay at most this many steps' matrices (decimated); None replays all.
    """
    cfg = config if config is not None else AlertConfig()
    sc = _Scalars(run)
    try:
        alerts, replayed, decimated = _replay(run, sc, cfg, max_replay)
        n, first_step, last_step = sc.bounds()
        first_loss, _ = sc.edge(last=False)
        final_loss, final_acc = sc.edge(last=True)
        last_finite = sc.last_finite_loss()
        head_end = sc.nth_step(min(n, _EDGE_STEPS) - 1) if n else -1
    finally:
        sc.close()
    first, last, first_name, last_name, col = _param_edges(run)
    ratio_start = ratio_end = math.nan
    if n and first >= 0:
        head = run.stats(first_step, head_end + 1)[1]
        ratio_start = _ratio(head, first, last, col)
        ratio_end = _ratio(run.tail(_EDGE_STEPS)[1], first, last, col)
    rules = list(dict.fromkeys(a.rule for a in alerts))
    end = run.end
    return RunReport(
        path=str(run.path),
        run=run.run,
        inc=run.inc,
        name=run.name,
        config=dict(run.hello.config) if run.hello is not None else {},
        steps=n,
        first_step=first_step,
        last_step=last_step,
        status=end.status if end is not None else "no end",
        reason=end.reason if end is not None else "",
        final_loss=final_loss,
        final_acc=final_acc,
        last_finite_loss=last_finite,
        alerts=alerts,
        first_layer=first_name,
        last_layer=last_name,
        rms_ratio_start=ratio_start,
        rms_ratio_end=ratio_end,
        replayed=replayed,
        decimated=decimated,
        verdict=_verdict(alerts, n, first_loss, last_finite, ratio_end),
        rules=rules,
    )
