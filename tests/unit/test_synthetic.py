"""Synthetic telemetry: deterministic, shaped like the protocol, and physically plausible."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradtui.protocol import COLUMNS, Step, decode, encode
from gradtui.synthetic import MODES, SyntheticRun, synthetic_layers

COL = {name: i for i, name in enumerate(COLUMNS)}
PARAM_ONLY = ("grad_norm", "grad_rms", "grad_max", "grad_nonfinite", "weight_norm", "update_ratio")
ACT_ONLY = ("act_mean", "act_std")


def _param_rms(run: SyntheticRun, step: int) -> np.ndarray:
    rows = [i for i, li in enumerate(run.layers) if li.role == "param"]
    return run.stats(step)[rows, COL["grad_rms"]].astype(np.float64)


def test_layers_alternate_linear_and_activation() -> None:
    """Guards: the row layout tests and the viewer rely on (names, roles, kinds, params)."""
    layers = synthetic_layers(3, "tanh", width=8)
    assert [li.name for li in layers] == [
        "layers.0.linear",
        "layers.0.act",
        "layers.1.linear",
        "layers.1.act",
        "layers.2.linear",
        "layers.2.act",
    ]
    assert [li.role for li in layers] == ["param", "act"] * 3
    assert {li.kind for li in layers[1::2]} == {"Tanh"}
    assert layers[0].shape == (8, 8) and layers[0].params == 72 and layers[1].params == 0
    with pytest.raises(ValueError):
        synthetic_layers(0)


@pytest.mark.parametrize("mode", MODES)
def test_stats_shape_dtype_and_determinism(mode: str) -> None:
    """Guards: float32 [rows x COLUMNS], a pure function of (seed, step), seeds differ."""
    layers = synthetic_layers(5)
    a = SyntheticRun(layers, mode=mode, seed=3)  # type: ignore[arg-type]
    b = SyntheticRun(layers, mode=mode, seed=3)  # type: ignore[arg-type]
    c = SyntheticRun(layers, mode=mode, seed=4)  # type: ignore[arg-type]
    s = a.stats(10)
    assert s.shape == (10, len(COLUMNS)) and s.dtype == np.float32
    assert a.stats(10).tobytes() == b.stats(10).tobytes()
    assert a.stats(10).tobytes() != c.stats(10).tobytes()
    assert a.loss(10) == b.loss(10) or math.isnan(a.loss(10))


def test_columns_not_applicable_are_nan() -> None:
    """Guards: NaN marks "not applicable" by role (viewer and alerts rely on it)."""
    layers = synthetic_layers(4)
    s = SyntheticRun(layers, mode="healthy").stats(0)
    for i, li in enumerate(layers):
        if li.role == "param":
            assert np.isnan(s[i, [COL[c] for c in (*ACT_ONLY, "act_saturated", "act_dead")]]).all()
            assert np.isfinite(s[i, [COL[c] for c in PARAM_ONLY]]).all()
        else:
            assert np.isnan(s[i, [COL[c] for c in PARAM_ONLY]]).all()
            assert np.isfinite(s[i, [COL[c] for c in ACT_ONLY]]).all()
            assert np.isnan(s[i, COL["act_dead"]])  # sigmoid: no dead-unit stat


def test_vanishing_shrinks_toward_input_and_saturates() -> None:
    """Guards: vanishing mode = ~x0.25 per layer toward the input and saturated sigmoids."""
    for seed in range(10):
        run = SyntheticRun(synthetic_layers(8), mode="vanishing", seed=seed)
        rms = _param_rms(run, 5)
        ratios = rms[:-1] / rms[1:]
        assert np.all((ratios > 0.1) & (ratios < 0.5))
        assert rms[0] / rms[-1] < 1e-3
        sat = run.stats(5)[1::2, COL["act_saturated"]]
        assert np.all(sat > 0.5)


def test_healthy_is_flat_within_10x() -> None:
    """Guards: healthy runs never trip a vanishing detector (spread < 10x, low saturation)."""
    for seed in range(5):
        run = SyntheticRun(synthetic_layers(12), mode="healthy", seed=seed)
        for step in (0, 50, 500):
            rms = _param_rms(run, step)
            assert rms.max() / rms.min() < 10
            assert np.all(run.stats(step)[1::2, COL["act_saturated"]] < 0.1)
        assert run.loss(500) < run.loss(0)


def test_exploding_grows_geometrically_with_step() -> None:
    """Guards: exploding mode grows the total norm by a constant factor per step."""
    run = SyntheticRun(synthetic_layers(6, "relu"), mode="exploding")
    norms = np.array([run.grad_norm(s) for s in (0, 100, 200, 300)])
    growth = norms[1:] / norms[:-1]
    assert np.all(growth > 3)
    assert growth.max() / growth.min() < 1.5
    assert run.grad_norm(100_000) == math.inf  # float32 overflow, no exception


def test_nan_mode_breaks_after_nan_after() -> None:
    """Guards: nan mode is finite before ``nan_after`` and non-finite (counted) after it."""
    run = SyntheticRun(synthetic_layers(3), mode="nan", nan_after=20)
    assert math.isfinite(run.loss(19)) and math.isfinite(run.grad_norm(19))
    assert np.all(run.stats(19)[0::2, COL["grad_nonfinite"]] == 0)
    assert math.isnan(run.loss(20)) and run.grad_norm(20) == math.inf
    broken = run.stats(20)
    assert np.isnan(broken[0::2, COL["grad_rms"]]).all()
    assert np.all(broken[0::2, COL["grad_nonfinite"]] > 0)


def test_stats_encode_as_a_step() -> None:
    """Guards: synthetic matrices are valid protocol payloads (what benchmarks feed the viewer)."""
    run = SyntheticRun(synthetic_layers(4), mode="nan", nan_after=0)
    msg = Step(run="syn", step=1, loss=run.loss(1), stats=run.stats(1))
    got = decode(encode(msg))
    assert isinstance(got, Step) and got.stats.tobytes() == msg.stats.tobytes()


def test_bad_mode_rejected() -> None:
    """Guards: a typo in a mode fails loudly instead of silently producing healthy data."""
    with pytest.raises(ValueError):
        SyntheticRun(synthetic_layers(2), mode="exploded")  # type: ignore[arg-type]
