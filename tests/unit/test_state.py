"""Pure tests of the viewer state: bounded history, seq accounting, liveness."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gradtui.protocol import COLUMNS, End, Heartbeat, Hello, LayerInfo, Step
from gradtui.state import DecimatingRing, Fleet, Liveness, RunState

LAYERS = tuple(LayerInfo(name=f"l{i}", kind="Linear", role="param") for i in range(3))


def _hello(run: str = "r1", seq: int = 0, inc: str = "a") -> Hello:
    return Hello(run=run, inc=inc, seq=seq, name="demo", layers=LAYERS)


def _step(step: int, seq: int, inc: str = "a", rows: int = 3, value: float = 1.0) -> Step:
    stats = np.full((rows, len(COLUMNS)), value, np.float32)
    return Step(run="r1", inc=inc, seq=seq, step=step, loss=1.0 / (step + 1), stats=stats)


def test_ring_keeps_recent_exactly_and_bounds_memory() -> None:
    """Guards the constant-memory promise: a long run never grows the buffers."""
    ring = DecimatingRing((2,), np.float32, recent=8, coarse=4)
    for i in range(10_000):
        ring.append(i, [i, -i])
    steps, items = ring.all()
    assert len(steps) <= 12
    assert list(steps[-8:]) == list(range(9992, 10_000))
    assert np.all(np.diff(steps) > 0), "history must stay ordered"
    assert steps[0] < 100, "old history is decimated, not discarded"
    assert items[-1, 0] == 9999


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(2, 16), st.integers(0, 600))
def test_ring_order_and_bounds_property(recent: int, coarse: int, n: int) -> None:
    """Any capacity and length: ordered steps, bounded size, newest entries exact."""
    ring = DecimatingRing((), np.float64, recent=recent, coarse=coarse)
    for i in range(n):
        ring.append(i, float(i))
    steps, items = ring.all()
    assert len(steps) <= recent + coarse
    assert np.all(np.diff(steps) > 0)
    assert np.array_equal(steps.astype(np.float64), items)
    assert list(ring.recent()[0]) == list(range(max(0, n - recent), n))


def test_gaps_duplicates_and_restarts_counted() -> None:
    """Sequence holes are losses; replays are ignored; a new incarnation is not corruption."""
    state = RunState("r1")
    state.apply(_hello(), now=0.0)
    state.apply(_step(0, seq=1), now=0.1)
    state.apply(_step(3, seq=4), now=0.2)  # seq 2, 3 lost
    state.apply(_step(3, seq=4), now=0.3)  # duplicate
    assert state.counters.gaps == 2
    assert state.counters.duplicates == 1
    assert state.counters.steps == 2
    state.apply(_hello(seq=0, inc="b"), now=0.4)
    state.apply(_step(0, seq=1, inc="b"), now=0.5)
    assert state.counters.restarts == 1
    assert state.counters.gaps == 2
    assert state.latest is not None and state.latest.step == 0


def test_step_before_hello_gets_placeholder_rows_then_names() -> None:
    """A slow joiner that sees steps first still shows data, renamed once hello arrives."""
    state = RunState("r1")
    state.apply(_step(5, seq=7), now=0.0)
    assert [li.name for li in state.layers] == ["row0", "row1", "row2"]
    assert state.columns == COLUMNS
    state.apply(_hello(seq=8), now=0.1)
    assert [li.name for li in state.layers] == ["l0", "l1", "l2"]


def test_mismatched_matrix_is_dropped_not_crashing() -> None:
    """A step whose shape disagrees with the hello is counted and ignored."""
    state = RunState("r1")
    state.apply(_hello(), now=0.0)
    state.apply(_step(1, seq=1, rows=5), now=0.1)
    assert state.counters.mismatched == 1
    assert state.latest is None


def test_liveness_transitions() -> None:
    """live -> idle (heartbeats only) -> stale (silence) -> ended."""
    state = RunState("r1")
    assert state.liveness(0.0) is Liveness.WAITING
    state.apply(_hello(), now=0.0)
    state.apply(_step(0, seq=1), now=1.0)
    assert state.liveness(2.0) is Liveness.LIVE
    for k in range(2, 10):
        state.apply(Heartbeat(run="r1", inc="a", seq=k, step=0), now=float(k))
    assert state.liveness(9.5) is Liveness.IDLE
    assert state.liveness(20.0) is Liveness.STALE
    state.apply(End(run="r1", inc="a", seq=10, status="finished"), now=21.0)
    assert state.liveness(100.0) is Liveness.ENDED


def test_series_and_scalars_follow_steps() -> None:
    """Column series and scalar series line up with the published steps."""
    fleet = Fleet()
    fleet.apply(_hello(), now=0.0)
    for i in range(5):
        fleet.apply(_step(i * 10, seq=i + 1, value=float(i)), now=0.0)
    run = fleet.runs["r1"]
    steps, values = run.series("grad_rms")
    assert list(steps) == [0, 10, 20, 30, 40]
    assert values.shape == (5, 3)
    assert values[-1, 0] == 4.0
    s_steps, loss = run.scalar("loss")
    assert list(s_steps) == list(steps)
    assert math.isclose(loss[0], 1.0)
    assert np.isnan(run.current("nope")).all()


def test_snapshot_history_holes_are_not_losses() -> None:
    """A late joiner's decimated snapshot skips seqs on purpose; only live holes count."""
    state = RunState("r1")
    state.apply(_hello(), now=0.0, history=True)
    state.apply(_step(0, seq=10), now=0.0, history=True)
    state.apply(_step(50, seq=60), now=0.0, history=True)
    assert state.counters.gaps == 0
    state.apply(_step(51, seq=61), now=0.1)
    state.apply(_step(53, seq=63), now=0.2)
    assert state.counters.gaps == 1
    assert state.counters.steps == 4
