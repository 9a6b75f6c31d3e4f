"""A viewer that connects late still sees the run from its first step (Clone pattern)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from gradtui.protocol import COLUMNS
from gradtui.publish import Publisher
from gradtui.state import Fleet
from gradtui.synthetic import SyntheticRun, synthetic_layers
from gradtui.tui.live_source import LiveSource


@pytest.fixture(autouse=True)
def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(tmp_path / "rt"))


def _drain(source: LiveSource, fleet: Fleet, run: str, want: int, budget: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < budget:
        fleet.apply_many(source.poll(0.05))
        state = fleet.runs.get(run)
        if state is not None and state.counters.steps >= want:
            break
    return time.monotonic() - start


@pytest.mark.parametrize("via_registry", [False, True], ids=["endpoint", "registry"])
def test_late_viewer_gets_history_then_live_without_gap(via_registry: bool) -> None:
    """Guards late joining: 2,000 steps published before connecting all arrive, none lost."""
    layers = synthetic_layers(10)
    synth = SyntheticRun(layers, mode="vanishing", seed=1)
    endpoint = None if via_registry else "tcp://127.0.0.1:*"
    with Publisher(name="late", layers=layers, endpoint=endpoint, queue_size=10_000) as pub:
        for step in range(2000):
            pub.publish_step(step=step, loss=synth.loss(step), stats=synth.stats(step))
        deadline = time.monotonic() + 10
        while pub.sent < 2001 and time.monotonic() < deadline:  # hello + 2000 steps
            time.sleep(0.01)
        fleet = Fleet()
        source = LiveSource(discover=True) if via_registry else LiveSource([pub.endpoint])
        source.open()
        try:
            _drain(source, fleet, pub.run, 2000, budget=10.0)
            for step in range(2000, 2050):  # live steps after the seam
                pub.publish_step(step=step, loss=synth.loss(step), stats=synth.stats(step))
            _drain(source, fleet, pub.run, 2050, budget=10.0)
        finally:
            source.close()
    state = fleet.runs[pub.run]
    steps, values = state.series("grad_rms")
    assert list(steps) == list(range(2050)), "history then live, each step once, in order"
    assert state.counters.gaps == 0 and state.counters.duplicates == 0
    assert values.shape == (2050, len(layers))
    assert np.allclose(values[5], synth.stats(5)[:, COLUMNS.index("grad_rms")], equal_nan=True)
