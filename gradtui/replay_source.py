"""Recorded runs as a receive-loop ``Source``, with a step cursor the UI can move.

Replaying a 100,000-step run message by message at start-up would take seconds, and the viewer
keeps only ~2,000 recent steps at full resolution plus a decimated past anyway. So for a cursor
position ``c`` each run's state is built from exactly what it would hold: an evenly spaced
sample of the steps before its last ``TAIL`` steps (the reader's indexed ``overview``), then the
last ``TAIL`` steps up to ``c`` at full resolution (one range read). The state is built off the
fleet's lock and swapped in under it in one assignment, so the UI never sees half a run.

Everything happens on the receive thread (SQLite connections stay on the thread that opened
them); the UI only calls :meth:`ReplaySource.seek` and reads :attr:`ReplaySource.timeline`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from gradtui.protocol import AnyMessage, End, Hello, Step
from gradtui.state import MAX_RECENT, Fleet, RunState, StepObserver
from gradtui.tui.receiver import Item, SourceHealth

if TYPE_CHECKING:
    from gradtui.storage.reader import RecordedRun, Recording

TAIL: Final = MAX_RECENT
"""Steps fed at full resolution up to the cursor: what a live viewer keeps exactly."""
OVERVIEW: Final = 1024
"""Evenly spaced earlier steps fed before the tail (the decimated past)."""
ALERT_WINDOW: Final = 256
"""Only the last steps before the cursor go through the alert engine: enough for its
consecutive-step and hysteresis rules to settle on the alerts active at the cursor, while
observing all ~3,000 fed steps cost about 0.4 ms each (over a second per run)."""
FIRST_TAIL: Final = 256
"""Steps of the quick first pass at open: the first frame shows these while the full history
(overview + ``TAIL``) is built on the next poll."""
_FAR_FUTURE: Final = 1e15
"""Receive time for a run shown mid-way: it reads as live, never as stale."""


@dataclass(frozen=True, slots=True)
class Timeline:
    """Where the cursor is: the UI reads it (a new object per change: safe across threads)."""

    first: int = 0
    last: int = 0
    cursor: int = 0
    runs: int = 0
    loading: bool = True
    build_s: float = math.nan
    """Seconds the last cursor move took to rebuild every run's state."""
    error: str = ""

    def fraction(self) -> float:
        span = self.last - self.first
        return 1.0 if span <= 0 else (self.cursor - self.first) / span


@dataclass(slots=True)
class _Run:
    key: str
    rec: RecordedRun
    steps: npt.NDArray[np.int64]
    scalars: dict[str, npt.NDArray[Any]]


def _scalar_at(scalars: dict[str, npt.NDArray[Any]], name: str, i: int) -> float:
    col = scalars.get(name)
    return float(col[i]) if col is not None else math.nan


def step_messages(
    run: _Run, indices: npt.NDArray[np.intp], stack: npt.NDArray[np.float32], seq0: int
) -> Iterator[Step]:
    """Step messages for rows ``indices`` of the run's scalars with matrices ``stack``."""
    sc = run.scalars
    for k, i in enumerate(indices):
        yield Step(
            run=run.rec.run,
            inc=run.rec.inc,
            seq=seq0 + k,  # renumbered: a decimated past is not a gap on the wire
            t=_scalar_at(sc, "t", int(i)),
            step=int(run.steps[i]),
            loss=_scalar_at(sc, "loss", int(i)),
            acc=_scalar_at(sc, "acc", int(i)),
            lr=_scalar_at(sc, "lr", int(i)),
            grad_norm=_scalar_at(sc, "grad_norm", int(i)),
            step_time=_scalar_at(sc, "step_time", int(i)),
            throughput=_scalar_at(sc, "throughput", int(i)),
            clipped=bool(sc["clipped"][i]) if "clipped" in sc else False,
            stats=stack[k],
        )


def build_state(
    run: _Run,
    cursor: int,
    *,
    observer: StepObserver | None = None,
    tail: int = TAIL,
    overview: int = OVERVIEW,
) -> RunState:
    """The ``RunState`` a live viewer would hold had it watched ``run`` up to step ``cursor``."""
    rec = run.rec
    state = RunState(run.key, str(rec.path))
    n = int(np.searchsorted(run.steps, cursor, side="right"))  # steps <= cursor
    at_end = n == len(run.steps)
    now = rec.last_t if at_end and rec.end is None and rec.last_t else _FAR_FUTURE
    seq = 0
    if rec.hello is not None:
        state.apply(dataclasses.replace(rec.hello, seq=seq), now)
        seq += 1
    n_tail = min(n, tail)
    pre = n - n_tail
    if pre > 0 and overview > 0:
        first_tail = int(run.steps[pre])
        if pre <= 4 * overview:
            ov_steps, ov_stack = rec.stats(None, first_tail)
            if len(ov_steps) > overview:
                pick = np.linspace(0, len(ov_steps) - 1, overview).round().astype(np.intp)
                ov_steps, ov_stack = ov_steps[pick], ov_stack[pick]
        elif at_end:
            # The reader's overview spans the whole run: at the end that is exactly the past.
            ov_steps, ov_stack = rec.overview(overview + n_tail * overview // pre)
            keep = ov_steps < first_tail
            ov_steps, ov_stack = ov_steps[keep], ov_stack[keep]
        else:
            # Mid-run: one indexed single-step read per sample point of the past.
            want = np.unique(run.steps[np.linspace(0, pre - 1, overview).round().astype(np.intp)])
            parts = [rec.stats(int(s), int(s) + 1) for s in want]
            ov_steps = np.concatenate([p[0] for p in parts])
            ov_stack = np.concatenate([p[1] for p in parts])
        idx = np.searchsorted(run.steps, ov_steps).astype(np.intp)
        for msg in step_messages(run, idx, ov_stack, seq):
            state.apply(msg, now)
        seq += len(idx)
    if n_tail > 0:
        lo = int(run.steps[pre])
        t_steps, t_stack = rec.stats(lo, int(run.steps[n - 1]) + 1)
        idx = np.searchsorted(run.steps, t_steps).astype(np.intp)
        watch_from = len(idx) - ALERT_WINDOW
        for k, msg in enumerate(step_messages(run, idx, t_stack, seq)):
            if k == watch_from:
                state.observer = observer
            state.apply(msg, now)
        seq += len(idx)
    state.observer = observer
    if at_end and rec.end is not None:
        state.apply(dataclasses.replace(rec.end, seq=seq), now)
    return state


class ReplaySource:
    """Recordings (files or directories) fed into a ``Fleet`` up to a movable step cursor.

    Args:
        paths: recording files or directories of them.
        fleet: the app's fleet; run states are swapped into it whole.
        observer_factory: the alert engine per run (as the fleet's own).
        start: initial cursor; None = the end of the longest run.
        key_suffix: appended to every replayed run id in the fleet (``gradtui watch --add``
            uses ``"~rec"`` so a recording of a run that is also live stays a separate run).
    """

    label = "replay"

    def __init__(
        self,
        paths: Sequence[str | Path],
        fleet: Fleet,
        *,
        observer_factory: Callable[[], StepObserver] | None = None,
        start: int | None = None,
        key_suffix: str = "",
    ) -> None:
        self.key_suffix = key_suffix
        self.paths = [Path(p) for p in paths]
        self.fleet = fleet
        self.observer_factory = observer_factory
        self.timeline = Timeline()
        self._start = start
        self._recordings: list[Recording] = []
        self._runs: list[_Run] = []
        self._lock = threading.Lock()
        self._target: int | None = None
        self._wake = threading.Event()
        self._full_pending = False
        self._health = SourceHealth(endpoints=tuple(str(p) for p in self.paths))

    # ------------------------------------------------------------------ UI side (any thread)

    def seek(self, step: int) -> None:
        """Ask for the cursor at ``step`` (clamped); the receive thread rebuilds the states."""
        tl = self.timeline
        with self._lock:
            self._target = max(tl.first, min(tl.last, step))
        self._wake.set()

    def move(self, delta: int) -> None:
        """Move the cursor by ``delta`` steps from the last requested position."""
        with self._lock:
            base = self._target if self._target is not None else self.timeline.cursor
        self.seek(base + delta)

    # ------------------------------------------------------------------ Source protocol

    def open(self) -> None:
        try:
            self._open()
        except Exception as exc:
            # The receive loop records it too; the timeline bar shows it instead of "loading".
            self.timeline = dataclasses.replace(
                self.timeline, loading=False, error=f"{type(exc).__name__}: {exc}"[:200]
            )
            self._health.error = self.timeline.error
            raise

    def _open(self) -> None:
        from gradtui.storage.reader import open_recording  # deferred: sqlite + numpy reads

        used: set[str] = set()
        for path in self.paths:
            recording = open_recording(path)
            self._recordings.append(recording)
            for rec in recording.runs:
                if not rec.steps and rec.hello is None:
                    continue
                key = base = rec.run + self.key_suffix
                k = 2
                with self.fleet.lock:
                    taken = set(self.fleet.runs)
                while key in used or key in taken:
                    key = f"{base}~{k}"  # the same run id in two files: keep both
                    k += 1
                used.add(key)
                scalars = rec.scalars()
                self._runs.append(_Run(key, rec, scalars["step"].astype(np.int64), scalars))
        lasts = [int(r.steps[-1]) for r in self._runs if len(r.steps)]
        firsts = [int(r.steps[0]) for r in self._runs if len(r.steps)]
        first, last = (min(firsts), max(lasts)) if lasts else (0, 0)
        cursor = last if self._start is None else max(first, min(last, self._start))
        self.timeline = Timeline(first, last, cursor, len(self._runs), loading=True)
        # Progressive: a quick pass for the first frame, the full history on the next poll.
        self._build(cursor, tail=FIRST_TAIL, overview=0)
        self._full_pending = True

    def _build(self, cursor: int, *, tail: int = TAIL, overview: int = OVERVIEW) -> None:
        t0 = time.perf_counter()
        for run in self._runs:
            observer = self.observer_factory() if self.observer_factory else None
            state = build_state(run, cursor, observer=observer, tail=tail, overview=overview)
            with self.fleet.lock:
                self.fleet.runs[run.key] = state
                self.fleet.version += 1
        with self._lock:
            self.timeline = dataclasses.replace(
                self.timeline,
                cursor=cursor,
                loading=tail < TAIL,
                build_s=time.perf_counter() - t0,
            )

    def poll(self, timeout: float) -> list[Item]:
        if timeout > 0:
            self._wake.wait(timeout)
        self._wake.clear()
        with self._lock:
            target, self._target = self._target, None
            if target is None and self._full_pending:
                target = self.timeline.cursor
            build = target is not None and (target != self.timeline.cursor or self._full_pending)
            if build:
                # Marked under the lock that cleared the request, so ``idle`` never sees a
                # moment with neither a pending request nor a build in progress.
                self.timeline = dataclasses.replace(self.timeline, loading=True)
        if build and target is not None:
            self._full_pending = False
            self._build(target)
        return []

    def idle(self) -> bool:
        """True when no cursor move is pending or being built (tests and benchmarks wait on it)."""
        with self._lock:
            return self._target is None and not self.timeline.loading

    def health(self) -> SourceHealth:
        return self._health

    def close(self) -> None:
        for recording in self._recordings:
            recording.close()
        self._recordings.clear()

    def messages(self) -> Iterator[AnyMessage]:
        """Every recorded message of every run, in order (for tools that want the raw stream)."""
        for run in self._runs:
            yield from run.rec.messages()


__all__ = [
    "ALERT_WINDOW",
    "OVERVIEW",
    "TAIL",
    "End",
    "Hello",
    "ReplaySource",
    "Timeline",
    "build_state",
]
