"""Property tests of the alert engine: robustness, exact streak semantics, no flapping."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_alerts_support import COL, Feed, healthy_matrix, mlp_layers

from gradtui.alerts import RULES, AlertConfig
from gradtui.protocol import COLUMNS, LayerInfo

KINDS = ("Linear", "Sigmoid", "Tanh", "ReLU", "GELU", "BatchNorm1d", "Embedding", "?")
LAYERS = mlp_layers(3)
RMS = COL["grad_rms"]

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1e-45, -1.0, 3.4e38, math.nan, math.inf, -math.inf]),
)


@st.composite
def schemas(draw: st.DrawFn) -> tuple[tuple[LayerInfo, ...], tuple[str, ...]]:
    n = draw(st.integers(0, 6))
    layers = tuple(
        LayerInfo(
            name=f"l{i}",
            kind=draw(st.sampled_from(KINDS)),
            role=draw(st.sampled_from(("param", "act"))),
        )
        for i in range(n)
    )
    columns = draw(st.lists(st.sampled_from(COLUMNS), unique=True, max_size=len(COLUMNS)))
    return layers, tuple(columns)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema=schemas(),
    data=st.data(),
    steps=st.integers(1, 6),
    consecutive=st.integers(1, 3),
)
def test_never_raises_on_arbitrary_matrices(
    schema: tuple[tuple[LayerInfo, ...], tuple[str, ...]],
    data: st.DataObject,
    steps: int,
    consecutive: int,
) -> None:
    """Guards the receive path: NaN, Inf, zeros, negatives or no layers must never raise."""
    layers, columns = schema
    feed = Feed(layers, AlertConfig(consecutive=consecutive, clear_after=1), columns=columns)
    for _ in range(steps):
        stats = data.draw(hnp.arrays(np.float32, (len(layers), len(columns)), elements=any_float))
        feed.step(stats, loss=data.draw(any_float), grad_norm=data.draw(any_float))
    for alert in feed.engine.history:
        assert alert.rule in RULES
        assert alert.first_step <= alert.last_step
        assert set(alert.layers) <= {li.name for li in layers}
        assert alert.message and alert.remedy


def _reference(condition: list[bool], need: int, clear_after: int) -> list[tuple[int, int]]:
    """The documented state machine, written plainly: (first_step, last_step) per episode."""
    episodes: list[tuple[int, int]] = []
    streak_start, streak, quiet, active, last = -1, 0, 0, False, -1
    for step, on in enumerate(condition):
        if on:
            quiet = 0
            if active:
                last = step
                continue
            if streak == 0:
                streak_start = step
            streak += 1
            if streak >= need:
                active, last = True, step
                episodes.append((streak_start, step))
        else:
            streak = 0
            if active:
                quiet += 1
                if quiet >= clear_after:
                    episodes[-1] = (episodes[-1][0], last)
                    active, quiet = False, 0
    if active:
        episodes[-1] = (episodes[-1][0], last)
    return episodes


@settings(max_examples=200, deadline=None)
@given(
    condition=st.lists(st.booleans(), max_size=60),
    need=st.integers(1, 5),
    clear_after=st.integers(1, 5),
)
def test_consecutive_and_clear_after_are_exact(
    condition: list[bool], need: int, clear_after: int
) -> None:
    """Guards the streak/clear semantics against a plain reference model, step for step."""
    cfg = AlertConfig(consecutive=need, clear_after=clear_after)
    feed = Feed(LAYERS, cfg)
    for on in condition:
        stats = healthy_matrix(LAYERS)
        if on:
            stats[0, RMS] = 1e-12  # far below both the firing and the relaxed threshold
        feed.step(stats)
    got = [(a.first_step, a.last_step) for a in feed.engine.history if a.rule == "vanishing"]
    assert got == _reference(condition, need, clear_after)
    assert {a.rule for a in feed.engine.history} <= {"vanishing"}


@settings(max_examples=100, deadline=None)
@given(
    wobble=st.lists(st.floats(0.6, 1.9), min_size=5, max_size=80),
    consecutive=st.integers(1, 3),
)
def test_no_flapping_around_the_threshold(wobble: list[float], consecutive: int) -> None:
    """Guards hysteresis: a ratio wobbling between 0.6x and 1.9x the threshold never re-fires."""
    cfg = AlertConfig(consecutive=consecutive, clear_after=3, hysteresis=2.0)
    feed = Feed(LAYERS, cfg)
    for _ in range(consecutive):
        stats = healthy_matrix(LAYERS)
        stats[0, RMS] = 1e-2 * cfg.vanishing_ratio * 0.5  # clearly below: fire
        feed.step(stats)
    for factor in wobble:
        stats = healthy_matrix(LAYERS)
        stats[0, RMS] = 1e-2 * cfg.vanishing_ratio * factor
        feed.step(stats)
    history = feed.engine.history
    assert len(history) == 1, "one episode, however the signal wobbles"
    assert history[0].active


@settings(max_examples=60, deadline=None)
@given(fractions=st.lists(st.floats(0.41, 0.99), min_size=3, max_size=50))
def test_fraction_rules_hold_within_margin(fractions: list[float]) -> None:
    """Guards the fraction margin: saturation between 0.41 and 0.99 is one episode at 0.5."""
    layers = (LayerInfo("s", "Sigmoid", "act"),)
    feed = Feed(layers, AlertConfig(consecutive=1, clear_after=2, fraction_margin=0.1))
    stats = healthy_matrix(layers)
    stats[0, COL["act_saturated"]] = 0.9
    feed.step(stats)
    for value in fractions:
        stats[0, COL["act_saturated"]] = value
        feed.step(stats)
    assert len(feed.engine.history) == 1 and feed.engine.active
