"""The probe never raises into the training loop, and odd models still get correct numbers."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from gradtui.probe import Monitor


def train_step(model: nn.Module, mon: Monitor, x: torch.Tensor) -> None:
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    loss = out.float().pow(2).mean()
    model.zero_grad()
    loss.backward()
    mon.step(loss)


def test_frozen_layers_have_no_grad_columns() -> None:
    """Guards frozen layers (grad None): NaN gradient cells, real weight norm, no fault."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    mon = Monitor(model, publish=False)
    train_step(model, mon, torch.randn(5, 3))
    mon.close()
    t = mon.last
    assert t is not None and mon.faults == 0
    assert math.isnan(t.get("0", "grad_norm")) and math.isnan(t.get("0", "out_grad_norm"))
    w, b = (float(p.detach().norm()) for p in model[0].parameters())
    assert t.get("0", "weight_norm") == pytest.approx(math.hypot(w, b), rel=1e-6)
    assert math.isfinite(t.get("2", "grad_norm")) and math.isfinite(t.get("1", "act_mean"))


def test_sparse_embedding_gradients() -> None:
    """Guards sparse gradients, which _foreach_norm rejects: per-tensor fallback, exact norm."""
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Tanh())
    mon = Monitor(model, publish=False)
    idx = torch.tensor([[1, 2, 2], [3, 1, 9]])
    train_step(model, mon, idx)
    mon.close()
    emb = model[0]
    assert isinstance(emb, nn.Embedding) and emb.weight.grad is not None
    g = emb.weight.grad.coalesce().values()
    t = mon.last
    assert t is not None and mon.faults == 0
    assert t.get("0", "grad_norm") == pytest.approx(float(g.norm()), rel=1e-5)
    assert t.get("0", "grad_max") == pytest.approx(float(g.abs().max()), rel=1e-6)
    assert t.get("0", "grad_nonfinite") == 0.0


def test_bfloat16_model() -> None:
    """Guards low-precision models: statistics computed in float32, finite, no fault."""
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)).to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, publish=False, optimizer=opt)
    train_step(model, mon, torch.randn(6, 4, dtype=torch.bfloat16))
    opt.step()
    mon.close()
    t = mon.last
    assert t is not None and mon.faults == 0
    assert t.values.dtype.name == "float32"
    for col in ("grad_norm", "weight_norm", "update_ratio", "out_grad_norm"):
        assert math.isfinite(t.get("0", col)), col
    assert math.isfinite(t.get("1", "act_std"))


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.fc(x))
        return self.act(self.fc(h) - 0.3), h


def test_module_called_twice_pools_both_calls() -> None:
    """Guards modules called twice per forward (and tuple outputs): the output-gradient norm
    covers both calls, activation mean/std are those of both outputs pooled."""
    torch.manual_seed(0)
    model = Twice()
    mon = Monitor(model, publish=False)
    kept: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        kept.append(out)

    model.act.register_forward_hook(keep)
    train_step(model, mon, torch.randn(5, 4))
    mon.close()
    t = mon.last
    assert t is not None and mon.faults == 0
    both = torch.cat([k.detach().reshape(-1) for k in kept])
    assert t.get("act", "act_mean") == pytest.approx(float(both.mean()), rel=1e-5)
    assert t.get("act", "act_std") == pytest.approx(float(both.std(correction=0)), rel=1e-4)
    gn = math.hypot(*(float(k.grad.norm()) for k in kept))  # type: ignore[union-attr]
    assert t.get("act", "out_grad_norm") == pytest.approx(gn, rel=1e-5)


def test_no_grad_eval_forwards_are_ignored() -> None:
    """Guards eval steps: forwards under no_grad between training steps leave the training
    statistics untouched (and hold no memory)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid())
    mon = Monitor(model, publish=False)
    x = torch.randn(4, 3)
    with torch.no_grad():
        model(torch.randn(50, 3) * 100)
    out = model(x)
    out.sum().backward()
    mon.step(0.0)
    mon.close()
    t = mon.last
    assert t is not None
    assert t.get("1", "act_mean") == pytest.approx(float(out.detach().mean()), rel=1e-6)


def test_model_without_activations_or_params() -> None:
    """Guards degenerate models: no activation modules, and a model with no parameters."""
    model = nn.Linear(3, 2)
    mon = Monitor(model, publish=False)
    train_step(model, mon, torch.randn(2, 3))
    mon.close()
    assert mon.last is not None and list(mon.last.rows) == ["(root)"]
    act_only = nn.Sequential(nn.Tanh())
    empty = Monitor(act_only, publish=False)
    x = torch.randn(2, 3, requires_grad=True)
    loss = act_only(x).sum()
    loss.backward()
    empty.step(loss)
    empty.close()
    assert empty.faults == 0 and empty.last is not None
    assert empty.last.get("0", "out_grad_norm") == pytest.approx(math.sqrt(6))
    assert math.isnan(empty.last.grad_norm)


class ExplodingPublisher:
    """Fault injection: a publisher whose every call fails."""

    endpoint = "tcp://127.0.0.1:1"
    run = "boom"
    dropped = 0

    def publish_step(self, **_: object) -> bool:
        raise RuntimeError("publisher exploded")

    def close(self, *_: object, **__: object) -> None:
        raise RuntimeError("close exploded")


def test_internal_faults_never_raise_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    """Guards the never-raises guarantee: a failing publisher is counted and logged once, and
    training (step, close, context exit) goes on."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    caplog.set_level(logging.WARNING, logger="gradtui.probe")
    with Monitor(model, publisher=ExplodingPublisher()) as mon:  # type: ignore[arg-type]
        for _ in range(3):
            train_step(model, mon, torch.randn(3, 2))
    assert mon.faults >= 3
    warned = [r for r in caplog.records if "step failed" in r.getMessage()]
    assert len(warned) == 1


def test_step_after_close_is_a_no_op() -> None:
    """Guards that a closed monitor neither raises nor re-registers hooks."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    mon = Monitor(model, publish=False)
    mon.close()
    train_step(model, mon, torch.randn(3, 2))
    assert not model[0]._forward_hooks and mon.faults == 0 and mon.last is None


def test_bad_arguments_are_rejected_at_construction() -> None:
    """Guards argument validation (construction may raise; only the step path may not)."""
    with pytest.raises(ValueError):
        Monitor(nn.Linear(1, 1), publish=False, every=0)
    with pytest.raises(ValueError):
        Monitor(nn.Linear(1, 1), publish=False, saturation_margin=0.7)


def test_importing_the_probe_does_not_import_textual() -> None:
    """Guards the training side staying light: gradtui.probe must not pull in the viewer."""
    code = "import sys, gradtui.probe; sys.exit('textual' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_parameters_moved_after_construction_keep_a_true_update_ratio() -> None:
    """Guards cached parameter views going stale when ``model.to(...)`` swaps ``param.data``
    after the Monitor was built: the update ratio must follow the new storage, not read 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mon = Monitor(model, publish=False, optimizer=opt)
    model.to(torch.float64)  # same Parameter objects, new storage
    for _ in range(2):
        model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
        mon.step(0.0)
        opt.step()
        opt.zero_grad()
    mon.close()
    assert mon.last is not None and mon.faults == 0
    assert mon.last.get("0", "update_ratio") > 1e-3


def test_device_side_nonfinite_count_is_exact_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the accelerator non-finite count (x*0 then 0-norm, no host sync), run here on CPU
    tensors, including the chunking that bounds its temporaries."""
    from gradtui.probe import stats

    ts = [torch.randn(100, 10), torch.randn(7), torch.randn(3, 3)]
    ts[0][0, 0], ts[0][5, 5], ts[2][1, 1] = math.nan, math.inf, -math.inf
    for chunk in (stats.CHUNK, 50):
        monkeypatch.setattr(stats, "CHUNK", chunk)
        got = stats.nonfinite_counts(ts, torch.device("cpu"))
        assert got.tolist() == [2.0, 0.0, 1.0]
