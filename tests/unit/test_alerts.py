"""The alert rules on hand-made and synthetic steps, through a real Fleet/RunState."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_alerts_support import COL, Feed, healthy_matrix, mlp_layers

from gradtui.alerts import RULES, AlertConfig, AlertEngine, worst_value
from gradtui.protocol import COLUMNS, Hello, LayerInfo, Step
from gradtui.state import Fleet
from gradtui.synthetic import SyntheticRun, synthetic_layers

LAYERS = mlp_layers(4)
RMS = COL["grad_rms"]


def _vanishing_matrix(first_rms: float = 1e-9) -> np.ndarray:
    stats = healthy_matrix(LAYERS)
    stats[0, RMS] = first_rms  # blocks.0.linear, the input side
    return stats


def test_healthy_steps_raise_nothing() -> None:
    """Guards against false alarms on a run where every number is in its healthy range."""
    feed = Feed(LAYERS)
    for _ in range(200):
        feed.step(healthy_matrix(LAYERS))
    assert feed.engine.history == []
    assert feed.engine.steps_seen == 200


def test_vanishing_fires_on_exactly_the_consecutive_th_step() -> None:
    """Guards the consecutive-steps contract: not one step early, not one late."""
    feed = Feed(LAYERS, AlertConfig(consecutive=3))
    feed.step(healthy_matrix(LAYERS))
    feed.step(_vanishing_matrix())
    feed.step(_vanishing_matrix())
    assert feed.engine.active == []
    feed.step(_vanishing_matrix())
    (alert,) = feed.engine.active
    assert alert.rule == "vanishing" and alert.severity == "warning"
    assert (alert.first_step, alert.last_step) == (1, 3)
    assert alert.layers == ("blocks.0.linear",)
    assert alert.worst == pytest.approx(1e-7, rel=1e-3)
    assert "blocks.0.linear gradient RMS 1e-09" in alert.message
    assert "--act relu" in alert.remedy and "--bn" in alert.remedy
    assert "--residual" in alert.remedy


def test_broken_streak_does_not_fire() -> None:
    """Guards against counting non-consecutive steps towards ``consecutive``."""
    feed = Feed(LAYERS, AlertConfig(consecutive=3))
    for _ in range(10):
        feed.step(_vanishing_matrix())
        feed.step(_vanishing_matrix())
        feed.step(healthy_matrix(LAYERS))
    assert feed.engine.history == []


def test_clears_after_clear_after_quiet_steps_and_keeps_last_step() -> None:
    """Guards hysteresis in time: one good step must not clear an alert."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1, clear_after=4))
    feed.step(_vanishing_matrix())
    feed.step(_vanishing_matrix())
    for _ in range(3):
        feed.step(healthy_matrix(LAYERS))
    assert [a.active for a in feed.engine.history] == [True]
    feed.step(healthy_matrix(LAYERS))
    (alert,) = feed.engine.history
    assert not alert.active and alert.last_step == 1
    assert feed.engine.active == []


def test_relaxed_threshold_holds_an_active_alert() -> None:
    """Guards hysteresis in value: a ratio just above the firing threshold keeps it active."""
    cfg = AlertConfig(consecutive=1, clear_after=2, vanishing_ratio=1e-3, hysteresis=2.0)
    feed = Feed(LAYERS, cfg)
    feed.step(_vanishing_matrix(1e-6))  # ratio 1e-4: fires
    for _ in range(20):
        feed.step(_vanishing_matrix(1.5e-5))  # ratio 1.5e-3: above 1e-3, below 2e-3
    (alert,) = feed.engine.history
    assert alert.active and alert.last_step == 20
    # A fresh engine does not fire on that same value: it is inside the band only.
    fresh = Feed(LAYERS, cfg)
    for _ in range(5):
        fresh.step(_vanishing_matrix(1.5e-5))
    assert fresh.engine.history == []


def test_absolute_floor_fires_when_every_layer_is_tiny() -> None:
    """Guards the floor: uniformly vanished gradients have ratio ~1 but are still vanishing."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1, vanishing_floor=1e-9))
    stats = healthy_matrix(LAYERS)
    stats[[0, 2, 4, 6, 8], RMS] = 1e-12
    feed.step(stats)
    (alert,) = feed.engine.active
    assert alert.rule == "vanishing" and len(alert.layers) == 5
    assert "below the floor" in alert.message


def test_rows_without_gradient_are_not_vanishing() -> None:
    """Guards 'ignore rows with no gradient': a frozen layer (0 or NaN RMS) is not vanishing."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1))
    stats = healthy_matrix(LAYERS)
    stats[0, RMS] = 0.0
    stats[2, RMS] = np.nan
    stats[[0, 2], COL["update_ratio"]] = 0.0
    feed.step(stats)
    assert feed.engine.history == []


def test_nonfinite_is_critical_and_fires_at_once() -> None:
    """Guards the critical path: a NaN loss or NaN gradient alerts on its first step."""
    feed = Feed(LAYERS, AlertConfig(consecutive=5))
    stats = healthy_matrix(LAYERS)
    stats[2, COL["grad_nonfinite"]] = 72
    stats[2, COL["grad_max"]] = np.inf
    feed.step(stats, loss=math.nan, grad_norm=math.inf)
    alert = next(a for a in feed.engine.active if a.rule == "nonfinite")
    assert alert.severity == "critical" and alert.first_step == 0
    assert alert.layers == ("blocks.1.linear",)
    assert "loss nan" in alert.message and "blocks.1.linear" in alert.message
    assert alert.worst == 72 + 1 + 1 + 1  # count + inf cell + loss + norm


def test_nan_cells_alone_are_not_applicable_not_nonfinite() -> None:
    """Guards the protocol's NaN = 'not applicable' (and NaN grad_norm = 'not reported')."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1))
    feed.step(healthy_matrix(LAYERS), grad_norm=math.nan)
    assert feed.engine.history == []


def test_exploding_relative_to_recent_median() -> None:
    """Guards the relative exploding test: a 300x jump over the median fires, 50x does not."""
    feed = Feed(LAYERS, AlertConfig(exploding_consecutive=1, exploding_min_history=5))
    for _ in range(10):
        feed.step(healthy_matrix(LAYERS), grad_norm=2.0)
    feed.step(healthy_matrix(LAYERS), grad_norm=10.0)
    assert feed.engine.history == []
    feed.step(healthy_matrix(LAYERS), grad_norm=100.0)
    assert feed.engine.history == [], "50x is within the default factor of 100"
    feed.step(healthy_matrix(LAYERS), grad_norm=600.0)
    (alert,) = feed.engine.active
    assert alert.rule == "exploding" and alert.first_step == 12
    assert "300x its recent median 2" in alert.message
    assert "--clip-norm" in alert.remedy


def test_exploding_ceiling_needs_no_history() -> None:
    """Guards the absolute ceiling: a huge norm on the very first step is exploding."""
    feed = Feed(LAYERS, AlertConfig(exploding_ceiling=100.0, exploding_consecutive=1))
    feed.step(healthy_matrix(LAYERS), grad_norm=1e4)
    (alert,) = feed.engine.active
    assert alert.rule == "exploding" and "ceiling" in alert.message


def test_exploding_rebuilds_unreported_norm_from_layers() -> None:
    """Guards loops that send no grad_norm: the per-layer norms still reveal a blow-up."""
    feed = Feed(LAYERS, AlertConfig(exploding_ceiling=100.0, exploding_consecutive=1))
    stats = healthy_matrix(LAYERS)
    stats[0, COL["grad_norm"]] = 5e3
    feed.step(stats, grad_norm=math.nan)
    (alert,) = feed.engine.active
    assert alert.rule == "exploding" and alert.layers == ("blocks.0.linear",)


def test_saturated_only_on_sigmoid_tanh_and_dead_only_on_relu_family() -> None:
    """Guards the kind filters: each fraction rule looks at the activations it is about."""
    layers = (
        LayerInfo("a", "Sigmoid", "act"),
        LayerInfo("b", "ReLU", "act"),
        LayerInfo("c", "Tanh", "act"),
        LayerInfo("d", "GELU", "act"),
        LayerInfo("e", "Identity", "act"),
    )
    stats = healthy_matrix(layers)
    stats[:, COL["act_saturated"]] = 0.9
    stats[:, COL["act_dead"]] = 0.8
    feed = Feed(layers, AlertConfig(consecutive=1))
    feed.step(stats)
    by_rule = {a.rule: a for a in feed.engine.active}
    assert set(by_rule) == {"saturated", "dead"}
    assert by_rule["saturated"].layers == ("a", "c")
    assert by_rule["dead"].layers == ("b", "d")
    assert by_rule["saturated"].worst == pytest.approx(0.9)
    assert "90% of outputs saturated" in by_rule["saturated"].message


def test_stalled_and_large_updates() -> None:
    """Guards both update-ratio bounds and the layers they name."""
    stats = healthy_matrix(LAYERS)
    stats[0, COL["update_ratio"]] = 1e-9
    stats[8, COL["update_ratio"]] = 0.5
    feed = Feed(LAYERS, AlertConfig(consecutive=1))
    feed.step(stats)
    by_rule = {a.rule: a for a in feed.engine.active}
    assert set(by_rule) == {"stalled_updates", "large_updates"}
    assert by_rule["stalled_updates"].layers == ("blocks.0.linear",)
    assert by_rule["large_updates"].layers == ("head",)
    assert by_rule["stalled_updates"].severity == "info"
    assert "--lr" in by_rule["large_updates"].remedy


def test_missing_columns_skip_their_rules() -> None:
    """Guards runs that publish fewer columns: rules look columns up by name, never position."""
    columns = ("grad_rms", "act_saturated")
    stats = np.array([[1e-2, np.nan], [np.nan, 0.99], [1e-12, np.nan], [np.nan, 0.99]], np.float32)
    layers = (
        LayerInfo("l0", "Linear", "param"),
        LayerInfo("s0", "Sigmoid", "act"),
        LayerInfo("l1", "Linear", "param"),
        LayerInfo("s1", "Sigmoid", "act"),
    )
    feed = Feed(layers, AlertConfig(consecutive=1), columns=columns)
    feed.step(stats, grad_norm=math.nan)
    assert sorted(feed.rules()) == ["saturated", "vanishing"]


def test_disabled_rules_never_fire() -> None:
    """Guards the ``disabled`` setting."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1, disabled=("vanishing",)))
    feed.step(_vanishing_matrix())
    assert feed.engine.history == []


def test_version_history_order_and_episode_layers() -> None:
    """Guards what the UI relies on: version bumps on change, history in first-step order."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1, clear_after=1))
    engine = feed.engine
    feed.step(healthy_matrix(LAYERS))
    v0 = engine.version
    feed.step(_vanishing_matrix())  # step 1: vanishing
    assert engine.version > v0
    stats = _vanishing_matrix()
    stats[2, RMS] = 1e-9
    stats[1, COL["act_saturated"]] = 0.9
    feed.step(stats)  # step 2: a second layer joins, saturated starts
    feed.step(healthy_matrix(LAYERS))  # both clear
    v1 = engine.version
    feed.step(healthy_matrix(LAYERS))
    assert engine.version == v1, "nothing changed: no bump"
    feed.step(_vanishing_matrix())  # step 5: a new vanishing episode
    history = engine.history
    assert [(a.rule, a.first_step) for a in history] == [
        ("vanishing", 1),
        ("saturated", 2),
        ("vanishing", 5),
    ]
    assert history[0].layers == ("blocks.0.linear", "blocks.1.linear")
    assert [a.active for a in history] == [False, False, True]


def test_history_is_bounded() -> None:
    """Guards constant memory: a week of flapping alerts keeps at most max_history episodes."""
    fleet = Fleet(
        observer_factory=lambda: AlertEngine(AlertConfig(consecutive=1, clear_after=1), 5)
    )
    fleet.apply(Hello(run="r", name="t", layers=LAYERS), 0.0)
    for i in range(40):
        stats = _vanishing_matrix() if i % 2 == 0 else healthy_matrix(LAYERS)
        fleet.apply(Step(run="r", seq=i + 1, step=i, loss=1.0, stats=stats, grad_norm=1.0), 0.0)
    engine = fleet.runs["r"].observer
    assert isinstance(engine, AlertEngine)
    assert len(engine.history) == 5
    assert engine.history[-1].first_step == 38


def test_restart_closes_open_alerts() -> None:
    """Guards restarts: a new trainer incarnation must not inherit the old one's alerts."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1))
    feed.step(_vanishing_matrix())
    fleet = feed.fleet
    fleet.apply(Hello(run="r", inc="new", name="t", layers=LAYERS), 0.0)
    fleet.apply(
        Step(run="r", inc="new", seq=1, step=0, loss=1.0, stats=healthy_matrix(LAYERS)), 0.0
    )
    engine = feed.engine
    assert engine.active == []
    assert [a.rule for a in engine.history] == ["vanishing"]


@pytest.mark.parametrize(
    ("mode", "act", "expected"),
    [
        ("vanishing", "sigmoid", {"vanishing", "saturated", "stalled_updates"}),
        ("healthy", "relu", set()),
        ("healthy", "tanh", set()),
        ("nan", "relu", {"nonfinite", "exploding"}),
    ],
)
def test_synthetic_runs(mode: str, act: str, expected: set[str]) -> None:
    """Guards the rules against the synthetic physics the demo and viewer tests use."""
    layers = synthetic_layers(20, act)
    fake = SyntheticRun(layers, mode=mode, seed=3, nan_after=50)  # type: ignore[arg-type]
    feed = Feed(layers)
    for i in range(120):
        feed.step(fake.stats(i), loss=fake.loss(i), grad_norm=fake.grad_norm(i))
    assert set(feed.rules()) == expected


def test_worst_value_across_episodes() -> None:
    """Guards the report's summary helper: min for lower-is-worse rules, max otherwise."""
    feed = Feed(LAYERS, AlertConfig(consecutive=1, clear_after=1))
    feed.step(_vanishing_matrix(1e-8))
    feed.step(healthy_matrix(LAYERS))
    feed.step(_vanishing_matrix(1e-10))
    assert worst_value(feed.engine.history, "vanishing") == pytest.approx(1e-8, rel=1e-3)
    assert math.isnan(worst_value(feed.engine.history, "dead"))


def test_every_rule_has_a_severity_remedy_and_message() -> None:
    """Guards completeness: a new rule must come with its remedy naming trainer flags."""
    from gradtui.alerts import REMEDY, SEVERITY

    assert set(REMEDY) == set(SEVERITY) == set(RULES)
    assert all("--" in text for text in REMEDY.values())
    assert COLUMNS.index("grad_rms") == RMS


def test_embeddings_are_not_judged_vanishing_or_stalled() -> None:
    """Guards sparse layers: an embedding's RMS counts untouched rows as zeros, so it is tiny."""
    layers = (LayerInfo("embed", "Embedding", "param"), *LAYERS)
    stats = healthy_matrix(layers)
    stats[0, RMS] = 1e-9
    stats[0, COL["update_ratio"]] = 1e-12
    feed = Feed(layers, AlertConfig(consecutive=1))
    feed.step(stats)
    assert feed.engine.history == []
    stats[1, RMS] = 1e-9  # blocks.0.linear: a dense layer, judged
    feed.step(stats)
    (alert,) = feed.engine.active
    assert alert.rule == "vanishing" and alert.layers == ("blocks.0.linear",)
