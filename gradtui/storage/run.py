"""``RecordedRun``: one run of a recording file, and its read paths.

Everything here reads with indexed queries so a 100,000-step run opens in milliseconds:
``tail`` (latest N steps) and ``overview`` (evenly spaced sample) touch only the rows they
return; ``scalars`` reads packed chunks plus the few rows after them, never the matrices.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gradtui.protocol import AnyMessage, End, Heartbeat, Hello, Step
from gradtui.storage.scalars import records_from_blob, rows_to_records
from gradtui.storage.schema import SCALAR_COLUMNS

Steps = npt.NDArray[np.int64]
Stack = npt.NDArray[np.float32]
"""``float32[n_steps, rows, cols]``: one stats matrix per step."""


def _nan(value: float | None) -> float:
    # SQLite stores NaN as NULL; the protocol's "not available" is NaN.
    return float("nan") if value is None else value


@dataclass(frozen=True, eq=False)
class RecordedRun:
    """One (run id, incarnation) in a recording file."""

    path: Path
    run: str
    inc: str
    hello: Hello | None
    """The last hello recorded; None if none arrived (then layer names are unknown)."""
    end: End | None
    """None while the run is live, or if it died without an end message."""
    steps: int
    """Number of recorded steps."""
    shape: tuple[int, int] | None
    """(rows, cols) of every stats matrix of the run; None before the first step."""
    first_t: float
    last_t: float
    _conn: sqlite3.Connection = field(repr=False)
    _id: int = field(repr=False)

    @property
    def name(self) -> str:
        """The run's display name (its id if no hello was recorded)."""
        return self.hello.name if self.hello is not None and self.hello.name else self.run

    def scalars(self) -> dict[str, npt.NDArray[Any]]:
        """Every step's scalars, ordered by step: ``step``/``seq`` int64, ``clipped`` bool,
        the rest float64 (NaN where not available)."""
        parts, packed_to = [], 0
        for last_id, blob in self._conn.execute(
            "SELECT last_id, data FROM scalar_chunks WHERE run_id = ? ORDER BY last_id",
            (self._id,),
        ):
            parts.append(records_from_blob(blob))
            packed_to = last_id
        rows = self._conn.execute(
            f"SELECT {', '.join(SCALAR_COLUMNS)} FROM steps WHERE run_id = ? AND id > ?"
            " ORDER BY id",
            (self._id, packed_to),
        ).fetchall()
        parts.append(rows_to_records(rows))
        table = np.concatenate(parts)
        # Chunks and rows are in id (arrival) order; a stable sort by step matches what
        # ORDER BY step gives through the (run_id, step) index: ties stay in arrival order.
        table = table[np.argsort(table["step"], kind="stable")]
        out: dict[str, npt.NDArray[Any]] = {
            name: np.ascontiguousarray(table[name]) for name in SCALAR_COLUMNS
        }
        out["clipped"] = out["clipped"] != 0
        return out

    def _stack(self, rows: list[tuple[int, bytes]]) -> tuple[Steps, Stack]:
        r, c = self.shape or (0, 0)
        steps = np.fromiter((s for s, _ in rows), dtype=np.int64, count=len(rows))
        data = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4")
        return steps, data.reshape(len(rows), r, c)

    _SELECT = "SELECT s.step, m.stats FROM steps s JOIN matrices m ON m.step_id = s.id"

    def stats(self, start: int | None = None, stop: int | None = None) -> tuple[Steps, Stack]:
        """Stats matrices of the steps numbered ``start <= step < stop`` (None: unbounded).

        Returns:
            (step numbers, ``float32[n, rows, cols]``), ordered by step.
        """
        lo = -(2**63) if start is None else start
        hi = 2**63 - 1 if stop is None else stop
        rows = self._conn.execute(
            f"{self._SELECT} WHERE s.run_id = ? AND s.step >= ? AND s.step < ? ORDER BY s.step",
            (self._id, lo, hi),
        ).fetchall()
        return self._stack(rows)

    def tail(self, n: int) -> tuple[Steps, Stack]:
        """The latest ``n`` steps' matrices (what a first frame needs), ordered by step."""
        rows = self._conn.execute(
            f"{self._SELECT} WHERE s.run_id = ? ORDER BY s.step DESC LIMIT ?", (self._id, n)
        ).fetchall()
        rows.reverse()
        return self._stack(rows)

    def overview(self, points: int = 512) -> tuple[Steps, Stack]:
        """At most ``points`` steps spread evenly over the run's step range.

        A sample, not an aggregate: each returned matrix is one real step. It costs
        ``points`` index lookups whatever the run's length.
        """
        if points <= 0 or not self.steps:
            return self._stack([])
        lo, hi = self._conn.execute(
            "SELECT min(step), max(step) FROM steps WHERE run_id = ?", (self._id,)
        ).fetchone()
        n = max(1, min(points, self.steps))
        rows = self._conn.execute(
            """
            WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n),
            picked AS (
                SELECT DISTINCT (
                    SELECT id FROM steps
                    WHERE run_id = :r AND step >= :lo + (i * (:hi - :lo)) / max(:n - 1, 1)
                    ORDER BY step LIMIT 1
                ) AS id FROM k
            )
            SELECT s.step, m.stats FROM picked
            JOIN steps s ON s.id = picked.id JOIN matrices m ON m.step_id = s.id
            ORDER BY s.step
            """,
            {"n": n, "r": self._id, "lo": lo, "hi": hi},
        ).fetchall()
        return self._stack(rows)

    def gaps(self) -> list[tuple[int, int]]:
        """Missing sequence numbers as inclusive ``(first, last)`` ranges, between the first
        and last message recorded: telemetry lost on the wire or dropped by a full queue."""
        events = self._conn.execute(
            "SELECT seq FROM events WHERE run_id = ?", (self._id,)
        ).fetchall()
        seqs = np.union1d(self.scalars()["seq"], np.array(events, dtype=np.int64).reshape(-1))
        holes = np.flatnonzero(np.diff(seqs) > 1)
        return [(int(seqs[i]) + 1, int(seqs[i + 1]) - 1) for i in holes]

    def messages(self, heartbeats: bool = False) -> Iterator[AnyMessage]:
        """Replay the run as protocol messages: its hello, steps (by seq), its end.

        Args:
            heartbeats: also yield recorded heartbeats, in seq order among the steps.
        """
        if self.hello is not None:
            yield self.hello
        r, c = self.shape or (0, 0)
        cur = self._conn.execute(
            "SELECT s.seq, s.t, s.step, s.loss, s.acc, s.lr, s.grad_norm, s.step_time,"
            " s.throughput, s.clipped, m.stats FROM steps s JOIN matrices m ON m.step_id = s.id"
            " WHERE s.run_id = ? ORDER BY s.seq",
            (self._id,),
        )
        steps: Iterator[AnyMessage] = (
            Step(
                run=self.run,
                inc=self.inc,
                seq=seq,
                t=t,
                step=step,
                loss=_nan(loss),
                acc=_nan(acc),
                lr=_nan(lr),
                grad_norm=_nan(gn),
                step_time=_nan(st),
                throughput=_nan(tp),
                clipped=bool(clipped),
                stats=np.frombuffer(blob, dtype="<f4").reshape(r, c),
            )
            for seq, t, step, loss, acc, lr, gn, st, tp, clipped, blob in cur
        )
        if heartbeats:
            beats = (
                Heartbeat(run=self.run, inc=self.inc, seq=seq, t=t, step=step, phase=phase)
                for seq, t, step, phase in self._conn.execute(
                    "SELECT seq, t, step, phase FROM events"
                    " WHERE run_id = ? AND kind = 'heartbeat' ORDER BY seq",
                    (self._id,),
                )
            )
            steps = heapq.merge(steps, beats, key=lambda m: m.seq)
        yield from steps
        if self.end is not None:
            yield self.end
