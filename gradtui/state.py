"""What the viewer knows about each run: bounded histories, liveness and loss accounting.

Pure Python + numpy: no sockets, no UI, no torch. The receive path calls ``Fleet.apply`` with
decoded messages; widgets read ``RunState`` objects on a timer. Memory per run is bounded: the
most recent steps are kept at full resolution and older ones are decimated (every k-th step,
with k doubling as the run grows), so a week-long run holds constant memory.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from gradtui.protocol import COLUMNS, AnyMessage, End, Heartbeat, Hello, LayerInfo, Step

# Budget for one run's stats history; full-resolution capacity shrinks for very wide models.
HISTORY_BYTES_PER_RUN: Final = 24 * 1024 * 1024
MAX_RECENT: Final = 2048
MIN_RECENT: Final = 64

# A source label with this prefix marks a late joiner's snapshot message (``history=True``).
HISTORY_SOURCE_PREFIX: Final = "history+"

# Scalar series kept per published step, in this order.
SCALARS: Final[tuple[str, ...]] = (
    "loss",
    "acc",
    "grad_norm",
    "lr",
    "step_time",
    "throughput",
    "clipped",
    "t",
)


class Liveness(StrEnum):
    """How a run looks from the viewer."""

    WAITING = "waiting"  # nothing received yet
    LIVE = "live"  # steps arriving
    IDLE = "idle"  # heartbeats but no steps (evaluation, data loading...): not dead
    STALE = "stale"  # nothing at all for a while: the trainer may be dead or unreachable
    ENDED = "ended"  # an ``end`` message arrived


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """Thresholds (seconds) for liveness; publishers send heartbeats about once a second."""

    idle_after: float = 5.0
    stale_after: float = 4.0


class DecimatingRing:
    """A bounded, step-indexed history of fixed-shape float arrays.

    The last ``recent`` appends are kept exactly. Older entries move to a coarse ring that keeps
    every ``stride``-th of them; when it fills, every other entry is dropped and the stride
    doubles. Memory is therefore at most ``recent + coarse`` items, whatever the run length.
    """

    def __init__(
        self,
        item_shape: tuple[int, ...],
        dtype: npt.DTypeLike,
        *,
        recent: int,
        coarse: int | None = None,
    ) -> None:
        self.item_shape = item_shape
        self.recent_capacity = recent
        self.coarse_capacity = max(2, coarse if coarse is not None else recent)
        self._recent = np.full((recent, *item_shape), np.nan, dtype=dtype)
        self._recent_steps = np.zeros(recent, dtype=np.int64)
        self._coarse = np.full((self.coarse_capacity, *item_shape), np.nan, dtype=dtype)
        self._coarse_steps = np.zeros(self.coarse_capacity, dtype=np.int64)
        self._head = 0  # next write position in the recent ring
        self._count = 0  # items in the recent ring
        self._coarse_count = 0
        self._stride = 1
        self._evicted = 0  # evictions since the last coarse keep
        self.appended = 0

    def __len__(self) -> int:
        return self._count + self._coarse_count

    @property
    def stride(self) -> int:
        """How many evicted steps one coarse entry stands for."""
        return self._stride

    def append(self, step: int, item: npt.ArrayLike) -> None:
        if self._count == self.recent_capacity:
            self._evict(self._head)
        else:
            self._count += 1
        self._recent[self._head] = item
        self._recent_steps[self._head] = step
        self._head = (self._head + 1) % self.recent_capacity
        self.appended += 1

    def _evict(self, index: int) -> None:
        keep = self._evicted % self._stride == 0
        self._evicted += 1
        if not keep:
            return
        if self._coarse_count == self.coarse_capacity:
            # Halve resolution: keep every other coarse entry, double the stride.
            kept = self._coarse[: self._coarse_count : 2].copy()
            kept_steps = self._coarse_steps[: self._coarse_count : 2].copy()
            self._coarse_count = len(kept)
            self._coarse[: self._coarse_count] = kept
            self._coarse_steps[: self._coarse_count] = kept_steps
            self._stride *= 2
            self._evicted = 1
        self._coarse[self._coarse_count] = self._recent[index]
        self._coarse_steps[self._coarse_count] = self._recent_steps[index]
        self._coarse_count += 1

    def _recent_order(self) -> npt.NDArray[np.intp]:
        start = (self._head - self._count) % self.recent_capacity
        return (start + np.arange(self._count)) % self.recent_capacity

    def recent(
        self, n: int | None = None, index: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """The last ``n`` (default all) full-resolution entries, oldest first (copies).

        ``index`` selects one position of the items' last axis (e.g. one stats column), so
        only that slice is copied.
        """
        order = self._recent_order()
        if n is not None:
            order = order[-n:] if n > 0 else order[:0]
        items = self._recent[order] if index is None else self._recent[order, ..., index]
        return self._recent_steps[order], items

    def all(
        self, index: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.generic]]:
        """Decimated older history followed by the full-resolution recent part (copies)."""
        steps, items = self.recent(index=index)
        if self._coarse_count == 0:
            return steps, items
        c = self._coarse_count
        coarse = self._coarse[:c] if index is None else self._coarse[:c, ..., index]
        return (np.concatenate([self._coarse_steps[:c], steps]), np.concatenate([coarse, items]))

    def last(self) -> npt.NDArray[np.generic] | None:
        if self._count == 0:
            return None
        item: npt.NDArray[np.generic] = self._recent[(self._head - 1) % self.recent_capacity]
        return item


@dataclass(slots=True)
class LatestStep:
    """The most recent step of a run, copied out of the wire buffer."""

    step: int
    loss: float
    acc: float
    grad_norm: float
    lr: float
    step_time: float
    throughput: float
    clipped: bool
    t: float
    stats: npt.NDArray[np.float32]


@dataclass(slots=True)
class Counters:
    """Loss accounting for one run (what arrived, what was missed or refused)."""

    messages: int = 0
    steps: int = 0
    gaps: int = 0  # messages missed, from sequence-number holes
    duplicates: int = 0  # repeated or out-of-order sequence numbers (ignored)
    restarts: int = 0  # new incarnations of the same run id
    mismatched: int = 0  # steps whose matrix shape disagrees with the hello (dropped)


class StepObserver(Protocol):
    """Something that looks at each new step of a run (the alert engine)."""

    def observe(self, run: RunState) -> None: ...


def _placeholder_layers(rows: int) -> tuple[LayerInfo, ...]:
    return tuple(LayerInfo(name=f"row{i}", kind="?", role="param") for i in range(rows))


def _placeholder_columns(cols: int) -> tuple[str, ...]:
    return COLUMNS if cols == len(COLUMNS) else tuple(f"col{j}" for j in range(cols))


class RunState:
    """Everything the viewer holds about one run (one run id)."""

    def __init__(
        self, run: str, source: str = "", *, history_bytes: int = HISTORY_BYTES_PER_RUN
    ) -> None:
        self.run = run
        self.source = source
        """Where it came from: an endpoint, or a recording's path."""
        self.hello: Hello | None = None
        self.end: End | None = None
        self.inc = ""
        self.layers: tuple[LayerInfo, ...] = ()
        self.columns: tuple[str, ...] = ()
        self.latest: LatestStep | None = None
        self.phase = "train"
        self.counters = Counters()
        self.last_seen: float | None = None
        """Receive time (the caller's clock) of the last message of any kind."""
        self.last_step_seen: float | None = None
        self.version = 0
        """Bumped on every change, so a widget can skip repainting an unchanged run."""
        self.observer: StepObserver | None = None
        self._history_bytes = history_bytes
        self._next_seq: int | None = None
        self.stats: DecimatingRing | None = None
        self.scalars = self._new_scalar_ring(MAX_RECENT)

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self.hello.name if self.hello is not None else self.run

    @property
    def config(self) -> dict[str, object]:
        return dict(self.hello.config) if self.hello is not None else {}

    def column(self, name: str) -> int:
        """Index of a stats column, or -1 when this run does not publish it."""
        try:
            return self.columns.index(name)
        except ValueError:
            return -1

    # ------------------------------------------------------------------ applying messages

    def apply(self, msg: AnyMessage, now: float, *, history: bool = False) -> None:
        """Fold one decoded message of this run into the state.

        Args:
            msg: the decoded message.
            now: receive time on the caller's clock (drives liveness).
            history: the message comes from a late joiner's snapshot, whose older part is
                decimated on purpose: its sequence holes are not losses.
        """
        if msg.inc != self.inc:
            if self.inc:
                self.counters.restarts += 1
                self._reset_history()
                self.end = None
            self.inc = msg.inc
            self._next_seq = None
        if not self._accept_seq(msg.seq, count_gaps=not history):
            return
        self.counters.messages += 1
        self.last_seen = now
        self.version += 1
        if isinstance(msg, Hello):
            self._apply_hello(msg)
        elif isinstance(msg, Step):
            self._apply_step(msg, now)
        elif isinstance(msg, Heartbeat):
            self.phase = msg.phase
        elif isinstance(msg, End):
            self.end = msg

    def _accept_seq(self, seq: int, *, count_gaps: bool = True) -> bool:
        expected = self._next_seq
        if expected is not None and seq < expected:
            self.counters.duplicates += 1
            return False
        if count_gaps and expected is not None and seq > expected:
            self.counters.gaps += seq - expected
        self._next_seq = seq + 1
        return True

    def _apply_hello(self, msg: Hello) -> None:
        changed = msg.layers != self.layers or msg.columns != self.columns
        self.hello = msg
        if changed:
            self.layers, self.columns = msg.layers, msg.columns
            self._reset_history()

    def _apply_step(self, msg: Step, now: float) -> None:
        rows, cols = msg.stats.shape
        if self.hello is None and (rows, cols) != (len(self.layers), len(self.columns)):
            # Step before hello (slow joiner): name rows provisionally until the hello arrives.
            self.layers, self.columns = _placeholder_layers(rows), _placeholder_columns(cols)
            self._reset_history()
        if (rows, cols) != (len(self.layers), len(self.columns)):
            self.counters.mismatched += 1
            return
        if self.stats is None:
            self.stats = self._new_stats_ring(rows, cols)
        stats = np.array(msg.stats, dtype=np.float32)  # own copy: the frame buffer is reused
        self.stats.append(msg.step, stats)
        self.scalars.append(
            msg.step,
            [
                msg.loss,
                msg.acc,
                msg.grad_norm,
                msg.lr,
                msg.step_time,
                msg.throughput,
                1.0 if msg.clipped else 0.0,
                msg.t,
            ],
        )
        self.latest = LatestStep(
            step=msg.step,
            loss=msg.loss,
            acc=msg.acc,
            grad_norm=msg.grad_norm,
            lr=msg.lr,
            step_time=msg.step_time,
            throughput=msg.throughput,
            clipped=msg.clipped,
            t=msg.t,
            stats=stats,
        )
        self.counters.steps += 1
        self.last_step_seen = now
        self.phase = "train"
        if self.observer is not None:
            self.observer.observe(self)

    def _new_stats_ring(self, rows: int, cols: int) -> DecimatingRing:
        per_step = max(1, rows * cols * 4)
        recent = int(max(MIN_RECENT, min(MAX_RECENT, self._history_bytes // (2 * per_step))))
        return DecimatingRing((rows, cols), np.float32, recent=recent)

    @staticmethod
    def _new_scalar_ring(recent: int) -> DecimatingRing:
        return DecimatingRing((len(SCALARS),), np.float64, recent=recent)

    def _reset_history(self) -> None:
        self.stats = None
        self.scalars = self._new_scalar_ring(MAX_RECENT)
        self.latest = None

    # ------------------------------------------------------------------ reading

    def liveness(self, now: float, policy: LivenessPolicy = LivenessPolicy()) -> Liveness:
        if self.end is not None:
            return Liveness.ENDED
        if self.last_seen is None:
            return Liveness.WAITING
        if now - self.last_seen > policy.stale_after:
            return Liveness.STALE
        if self.last_step_seen is None or now - self.last_step_seen > policy.idle_after:
            return Liveness.IDLE
        return Liveness.LIVE

    def scalar(
        self, name: str, *, recent: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(steps, values) of one scalar series; all history unless ``recent`` is given."""
        idx = SCALARS.index(name)
        steps, items = (
            self.scalars.recent(recent, idx) if recent is not None else self.scalars.all(idx)
        )
        return steps, np.asarray(items, dtype=np.float64)

    def series(
        self, column: str, *, recent: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(steps, values[time, layers]) of one stats column; empty when unknown."""
        j = self.column(column)
        if self.stats is None or j < 0:
            return np.zeros(0, np.int64), np.zeros((0, len(self.layers)), np.float32)
        steps, items = self.stats.recent(recent, j) if recent is not None else self.stats.all(j)
        return steps, np.asarray(items, dtype=np.float32)

    def current(self, column: str) -> npt.NDArray[np.float32]:
        """The latest value of a column for every layer (NaN where unknown)."""
        j = self.column(column)
        if self.latest is None or j < 0:
            return np.full(len(self.layers), np.nan, np.float32)
        return self.latest.stats[:, j]


class Fleet:
    """All runs a viewer knows about, keyed by run id. Thread-safe through ``lock``.

    The receive thread calls ``apply_many`` under the lock; the UI takes the lock briefly to
    copy what it paints. ``observer_factory`` (the alert engine) is attached to each new run.
    """

    def __init__(
        self,
        observer_factory: Callable[[], StepObserver] | None = None,
        policy: LivenessPolicy = LivenessPolicy(),
    ) -> None:
        self.runs: dict[str, RunState] = {}
        self.lock = threading.RLock()
        self.policy = policy
        self.version = 0
        self.received = 0
        self._observer_factory = observer_factory

    def get(self, run: str, source: str = "") -> RunState:
        state = self.runs.get(run)
        if state is None:
            state = RunState(run, source)
            if self._observer_factory is not None:
                state.observer = self._observer_factory()
            self.runs[run] = state
        elif source and not state.source:
            state.source = source
        return state

    def apply(
        self, msg: AnyMessage, now: float, source: str = "", *, history: bool = False
    ) -> RunState:
        state = self.get(msg.run, source)
        state.apply(msg, now, history=history)
        self.received += 1
        self.version += 1
        return state

    def apply_many(self, items: Iterable[tuple[AnyMessage, float, str]]) -> int:
        """Apply (message, receive time, source) triples under the lock; returns how many.

        A source starting with ``HISTORY_SOURCE_PREFIX`` marks snapshot history.
        """
        n = 0
        with self.lock:
            for msg, now, source in items:
                if source.startswith(HISTORY_SOURCE_PREFIX):
                    self.apply(msg, now, source[len(HISTORY_SOURCE_PREFIX) :], history=True)
                else:
                    self.apply(msg, now, source)
                n += 1
        return n

    def remove(self, run: str) -> None:
        with self.lock:
            if self.runs.pop(run, None) is not None:
                self.version += 1


def finite_or_nan(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Values with Inf mapped to NaN: a series that is safe to hand to a widget."""
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(arr), arr, math.nan)


__all__ = [
    "HISTORY_SOURCE_PREFIX",
    "SCALARS",
    "Counters",
    "DecimatingRing",
    "Fleet",
    "LatestStep",
    "Liveness",
    "LivenessPolicy",
    "RunState",
    "StepObserver",
    "finite_or_nan",
]
