"""Exactness of every probe column against straightforward per-tensor torch computations."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from gradtui.probe import DEFAULT_MARGIN, Monitor, StatsTable
from gradtui.probe.layers import ROOT_NAME, saturation_bounds
from gradtui.protocol import COLUMNS

RTOL = 2e-5
ATOL = 1e-7


# --------------------------------------------------------------------------- models


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.act(self.fc(self.norm(x)))
        return out


class ResNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.blocks = nn.Sequential(Residual(8), Residual(8))
        self.head = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.blocks(self.embed(idx)).mean(1)) * self.scale
        return out


def mlp() -> nn.Sequential:
    fc0, fc2, fc4 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 16)
    with torch.no_grad():
        fc0.weight.mul_(4)  # push the sigmoid into saturation
        fc2.weight.mul_(3)
        fc4.bias.data[:5] = -100.0  # type: ignore[union-attr]  # five ReLU units dead for the whole batch
    return nn.Sequential(fc0, nn.Sigmoid(), fc2, nn.Tanh(), fc4, nn.ReLU(), nn.Linear(16, 3))


def cnn() -> nn.Sequential:
    conv = nn.Conv2d(4, 4, 3)
    with torch.no_grad():
        conv.bias.data[1] = -1e3  # type: ignore[union-attr]  # channel 1 dead for the whole batch
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        conv,
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


Case = tuple[Callable[[], nn.Module], Callable[[torch.Generator], torch.Tensor]]
CASES: dict[str, Case] = {
    "mlp": (mlp, lambda g: torch.randn(7, 6, generator=g)),
    "cnn": (cnn, lambda g: torch.randn(5, 2, 6, 6, generator=g)),
    "residual": (ResNetish, lambda g: torch.randint(0, 20, (4, 5), generator=g)),
}


# --------------------------------------------------------------------------- reference


class Reference:
    """Independent per-tensor computation of every column, one module at a time."""

    def __init__(self, model: nn.Module, margin: float = DEFAULT_MARGIN) -> None:
        self.model = model
        self.margin = margin
        self.outs: dict[str, torch.Tensor] = {}
        self.handles = []
        for path, mod in model.named_modules():
            self.handles.append(mod.register_forward_hook(self._keep(path)))

    def _keep(self, path: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            out.retain_grad()
            self.outs[path] = out

        return hook

    @torch.no_grad()
    def before_step(self) -> dict[tuple[str, str], float]:
        """Everything except the update ratio, read after backward."""
        ref: dict[tuple[str, str], float] = {}
        self.weights = {id(p): p.detach().clone() for p in self.model.parameters()}
        for path, mod in self.model.named_modules():
            name = path or ROOT_NAME
            own = list(mod.parameters(recurse=False))
            if own:
                grads = [p.grad for p in own if p.grad is not None]
                gn = math.sqrt(sum(float(g.norm()) ** 2 for g in grads))
                ref[name, "grad_norm"] = gn
                ref[name, "grad_rms"] = gn / math.sqrt(sum(g.numel() for g in grads))
                ref[name, "grad_max"] = max(float(g.abs().max()) for g in grads)
                ref[name, "grad_nonfinite"] = float(sum(int((~g.isfinite()).sum()) for g in grads))
                ref[name, "weight_norm"] = math.sqrt(sum(float(p.norm()) ** 2 for p in own))
            out = self.outs.get(path)
            if out is not None and out.grad is not None:
                ref[name, "out_grad_norm"] = float(out.grad.norm())
            if out is not None and not own:
                o = out.detach()
                ref[name, "act_mean"] = float(o.mean())
                ref[name, "act_std"] = float(o.std(correction=0))
                bounds = saturation_bounds(mod)
                if bounds is not None:
                    lo, hi = bounds
                    m = self.margin * (hi - lo)
                    ref[name, "act_saturated"] = float(
                        ((o <= lo + m) | (o >= hi - m)).float().mean()
                    )
                if isinstance(mod, nn.ReLU | nn.LeakyReLU | nn.GELU):
                    if o.dim() == 4:  # conv: a unit is a channel
                        units = o.transpose(0, 1).reshape(o.shape[1], -1)
                    else:  # (batch, [seq,] features): a unit is a feature
                        units = o.reshape(-1, o.shape[-1]).T
                    ref[name, "act_dead"] = float((units <= 0).all(dim=1).float().mean())
        return ref

    @torch.no_grad()
    def update(self, ref: dict[tuple[str, str], float]) -> None:
        """The update ratio, read after the optimizer step."""
        for path, mod in self.model.named_modules():
            own = list(mod.parameters(recurse=False))
            if own:
                d = math.sqrt(sum(float((p - self.weights[id(p)]).norm()) ** 2 for p in own))
                name = path or ROOT_NAME
                ref[name, "update_ratio"] = d / ref[name, "weight_norm"]


def assert_table(table: StatsTable, ref: dict[tuple[str, str], float]) -> None:
    """Every (row, column) present in ``ref`` matches; every other cell is NaN."""
    for r, row in enumerate(table.rows):
        for c, col in enumerate(table.columns):
            got = float(table.values[r, c])
            want = ref.get((row, col), math.nan)
            if math.isnan(want):
                assert math.isnan(got), f"{row}/{col}: expected NaN, got {got}"
            else:
                assert got == pytest.approx(want, rel=RTOL, abs=ATOL), f"{row}/{col}"


def make_opt(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def run_steps(
    case: str, opt_kind: str, hooked: bool, steps: int = 3
) -> tuple[list[StatsTable], list[dict[tuple[str, str], float]], list[float]]:
    build, data = CASES[case]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = build()
    opt = make_opt(opt_kind, model)
    mon = Monitor(
        model,
        publish=False,
        optimizer=opt if hooked else None,
        update_sample=None,
        act_sample=None,
    )
    reference = Reference(model)
    tables: list[StatsTable | None] = []
    refs, losses = [], []
    for s in range(steps):
        out = model(data(gen))
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        ref = reference.before_step()
        losses.append(float(loss.detach()))
        mon.step(loss)
        opt.step()
        reference.update(ref)
        refs.append(ref)
        if hooked:
            tables.append(mon.last)  # the post-hook completes the step at once
        elif s > 0:
            tables.append(mon.last)  # the fallback completes a step at the next one
    mon.close()
    if not hooked:
        tables.append(mon.last)
    assert mon.faults == 0
    done = [t for t in tables if t is not None]
    assert len(done) == len(tables)
    return done, refs, losses


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("hooked", [True, False], ids=["opt-hooks", "fallback"])
def test_every_column_matches_reference(case: str, opt_kind: str, hooked: bool) -> None:
    """Guards every statistic (and which cells are NaN) for Linear/Conv/BN/LayerNorm/Embedding
    and residual models, with the update ratio exact for SGD and Adam, hooked or not."""
    tables, refs, losses = run_steps(case, opt_kind, hooked)
    assert [t.step for t in tables] == [0, 1, 2]
    for table, ref, loss in zip(tables, refs, losses, strict=True):
        assert table.loss == pytest.approx(loss, rel=1e-6)
        assert_table(table, ref)
        grads = [ref[r, "grad_norm"] for r in table.rows if (r, "grad_norm") in ref]
        assert table.grad_norm == pytest.approx(math.sqrt(sum(g * g for g in grads)), rel=RTOL)


def test_rows_are_modules_in_model_order() -> None:
    """Guards the row set and order: parameter owners and activations by module path."""
    mon = Monitor(ResNetish(), publish=False)
    got = [(li.name, li.kind, li.role) for li in mon.layers]
    assert got == [
        (ROOT_NAME, "ResNetish", "param"),
        ("embed", "Embedding", "param"),
        ("blocks.0.norm", "LayerNorm", "param"),
        ("blocks.0.fc", "Linear", "param"),
        ("blocks.0.act", "GELU", "act"),
        ("blocks.1.norm", "LayerNorm", "param"),
        ("blocks.1.fc", "Linear", "param"),
        ("blocks.1.act", "GELU", "act"),
        ("head", "Linear", "param"),
    ]
    assert mon.layers[3].shape == (8, 8) and mon.layers[3].params == 72
    mon.close()


def test_saturation_and_dead_are_nontrivial() -> None:
    """Guards that the reference cases really exercise saturation and dead units (a test that
    only ever compares zeros could not fail)."""
    tables, _, _ = run_steps("mlp", "sgd", True, steps=1)
    assert 0.0 < tables[0].get("1", "act_saturated") < 1.0
    assert tables[0].get("5", "act_dead") >= 5 / 16
    tables, _, _ = run_steps("cnn", "sgd", True, steps=1)
    assert tables[0].get("4", "act_dead") == pytest.approx(0.25)


def test_every_n_publishes_and_hooks_only_on_published_steps() -> None:
    """Guards every=N: only steps 0, N, 2N... complete, and no forward hook is registered
    during unpublished steps' forwards (so they cost nothing)."""
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model, publish=False, optimizer=opt, every=3)
    seen, hooked = [], []
    for _ in range(8):
        hooked.append(bool(model[1]._forward_hooks))
        loss = model(torch.randn(4, 6)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        mon.step(loss)
        opt.step()
        seen.append(None if mon.last is None else mon.last.step)
    mon.close()
    assert hooked == [True, False, False, True, False, False, True, False]
    assert seen == [0, 0, 0, 3, 3, 3, 6, 6]
    assert not model[1]._forward_hooks and mon.faults == 0


def test_every_n_fallback_update_is_the_next_step() -> None:
    """Guards the fallback update ratio with every=N: step s's update is measured at step s+1
    even though s+1 is not published."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mon = Monitor(model, publish=False, every=2, update_sample=None)
    x = torch.randn(4, 3)
    for s in range(2):
        loss = model(x).sum()
        opt.zero_grad()
        loss.backward()
        mon.step(loss)
        if s == 0:
            w0 = [p.detach().clone() for p in model.parameters()]
            opt.step()
            w1 = [p.detach() for p in model.parameters()]
            d = math.sqrt(sum(float((p - q).norm()) ** 2 for p, q in zip(w1, w0, strict=True)))
            want = d / math.sqrt(sum(float(q.norm()) ** 2 for q in w0))
        else:
            opt.step()
    assert mon.last is not None and mon.last.step == 0
    assert mon.last.get("0", "update_ratio") == pytest.approx(want, rel=RTOL)
    mon.close()


def test_nonfinite_gradients_are_counted() -> None:
    """Guards the non-finite count (exact, per row) and NaN propagation into the norms."""
    torch.manual_seed(0)
    model = mlp()
    mon = Monitor(model, publish=False)
    model(torch.randn(4, 6)).sum().backward()
    fc = model[2]
    assert isinstance(fc, nn.Linear) and fc.weight.grad is not None and fc.bias.grad is not None
    fc.weight.grad[0, :3] = torch.tensor([math.nan, math.inf, -math.inf])
    fc.bias.grad[1] = math.nan
    mon.step(1.0)
    mon.close()
    t = mon.last
    assert t is not None
    assert t.get("2", "grad_nonfinite") == 4.0
    assert math.isnan(t.get("2", "grad_norm"))
    assert t.get("0", "grad_nonfinite") == 0.0 and math.isfinite(t.get("0", "grad_norm"))
    assert math.isnan(t.grad_norm)


def test_sampled_update_ratio_estimates_the_exact_one() -> None:
    """Guards the default sampled update ratio: within a few percent of the exact value on a
    layer far larger than the sample, for SGD and Adam."""
    for kind in ("sgd", "adam"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
        opt = make_opt(kind, model)
        exact = Monitor(model, publish=False, optimizer=opt, update_sample=None)
        sampled = Monitor(model, publish=False, optimizer=opt)
        loss = model(torch.randn(32, 256)).pow(2).mean()
        loss.backward()
        exact.step(loss)
        sampled.step(loss)
        opt.step()
        a = exact.last.get("0", "update_ratio")  # type: ignore[union-attr]
        b = sampled.last.get("0", "update_ratio")  # type: ignore[union-attr]
        assert b == pytest.approx(a, rel=0.05), kind
        exact.close()
        sampled.close()


def test_skipped_optimizer_step_gives_nan_update() -> None:
    """Guards that a step whose optimizer step never ran (e.g. GradScaler skip) reports no
    update ratio instead of a stale or wrong one."""
    model = nn.Sequential(nn.Linear(3, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mon = Monitor(model, publish=False, optimizer=opt)
    for _ in range(2):
        model(torch.ones(2, 3)).sum().backward()
        mon.step(0.0)
    mon.close()
    assert mon.last is not None and mon.last.step == 1
    assert math.isnan(mon.last.get("0", "update_ratio"))
    assert math.isfinite(mon.last.get("0", "weight_norm"))


def test_table_accessors() -> None:
    """Guards StatsTable.get/column and its KeyError on unknown names."""
    values = np.arange(2 * len(COLUMNS), dtype=np.float32).reshape(2, -1)
    t = StatsTable(step=3, rows=("a", "b"), columns=COLUMNS, values=values)
    assert t.get("b", "grad_rms") == float(values[1, 1])
    assert list(t.column("grad_norm")) == [0.0, float(len(COLUMNS))]
    with pytest.raises(KeyError):
        t.get("c", "grad_norm")


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.relu = nn.ReLU(inplace=True)
        self.act = nn.GELU()
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.relu(self.fc(x)))
        h.add_(0.5)  # modifies the GELU output in place after its module returned
        out: torch.Tensor = self.head(h)
        return out


def test_outputs_modified_in_place_are_never_misreported() -> None:
    """Guards the retain_grad shortcut: an output later modified in place (Linear before
    ReLU(inplace=True), a GELU output bumped in place) is NaN on the first step, then exact:
    dLoss/d(pre-ReLU output), and the GELU's own values."""
    torch.manual_seed(0)
    model = InPlace()
    mon = Monitor(model, publish=False, act_sample=None)
    got: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            got[name + ".value"] = out.detach().clone()
            out.register_hook(lambda g: got.__setitem__(name + ".grad", g))  # type: ignore[no-untyped-call]

        return hook

    model.fc.register_forward_hook(keep("fc"))
    model.act.register_forward_hook(keep("act"))
    for s in range(2):
        loss = model(torch.randn(5, 4)).pow(2).sum()
        model.zero_grad()
        loss.backward()
        mon.step(loss)
        if s == 1:  # step 0 completes at step 1 (no optimizer: fallback update ratio)
            t = mon.last
            assert t is not None and t.step == 0
            assert math.isnan(t.get("fc", "out_grad_norm"))
            assert math.isnan(t.get("act", "act_mean"))
    mon.close()
    t = mon.last
    assert t is not None and mon.faults == 0
    assert t.get("fc", "out_grad_norm") == pytest.approx(float(got["fc.grad"].norm()), rel=RTOL)
    assert t.get("act", "act_mean") == pytest.approx(float(got["act.value"].mean()), rel=RTOL)
    assert t.get("act", "out_grad_norm") == pytest.approx(float(got["act.grad"].norm()), rel=RTOL)


def test_sampled_activation_stats_estimate_the_exact_ones() -> None:
    """Guards the default activation sample: on outputs far larger than the sample, mean, std
    and saturated fraction stay close to the exact values; dead stays exact."""
    torch.manual_seed(0)
    fc = nn.Linear(64, 512)
    with torch.no_grad():
        fc.weight.mul_(8)
        fc.bias.data[:100] = -1e3  # type: ignore[union-attr]
    model = nn.Sequential(fc, nn.Sigmoid(), nn.Linear(512, 512), nn.ReLU())
    exact = Monitor(model, publish=False, act_sample=None)
    sampled = Monitor(model, publish=False)
    model(torch.randn(128, 64)).sum().backward()
    exact.step(0.0)
    sampled.step(0.0)
    exact.close()
    sampled.close()
    a, b = exact.last, sampled.last
    assert a is not None and b is not None
    for row, col in [("1", "act_mean"), ("1", "act_std"), ("3", "act_mean"), ("3", "act_std")]:
        assert b.get(row, col) == pytest.approx(a.get(row, col), rel=0.03), (row, col)
    assert b.get("1", "act_saturated") == pytest.approx(a.get("1", "act_saturated"), abs=0.02)
    assert 0.1 < a.get("1", "act_saturated") < 0.9
    assert b.get("3", "act_dead") == a.get("3", "act_dead")


def test_large_tensors_take_the_per_tensor_max_path() -> None:
    """Guards max |g| for large tensors (per-tensor aminmax path, chosen by size): exact, and
    NaN when the gradient holds a NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256))
    mon = Monitor(model, publish=False)
    model(torch.randn(8, 256)).pow(2).sum().backward()
    fc = model[2]
    assert isinstance(fc, nn.Linear) and fc.weight.grad is not None
    fc.weight.grad[3, 7] = math.nan
    mon.step(0.0)
    mon.close()
    t = mon.last
    assert t is not None and mon.faults == 0
    grads = [p.grad for p in model[0].parameters() if p.grad is not None]
    want = max(float(g.abs().max()) for g in grads)
    assert t.get("0", "grad_max") == pytest.approx(want, rel=1e-6)
    assert math.isnan(t.get("2", "grad_max")) and t.get("2", "grad_nonfinite") == 1.0


def _big_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 512), nn.Tanh(), nn.Linear(512, 512), nn.Linear(512, 1))


def test_out_grad_norm_sums_repeated_backward_passes() -> None:
    """Guards output-gradient capture on large outputs: out_grad_norm equals the norm of an
    independently hooked dLoss/d(output), also summed over two backward passes of one graph."""

    def keep(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            out.register_hook(lambda g: got.setdefault(name, []).append(g.clone()))  # type: ignore[no-untyped-call]

        return hook

    for passes in (1, 2):
        torch.manual_seed(0)
        model = _big_model()
        got: dict[str, list[torch.Tensor]] = {}
        for name in ("0", "1", "2"):
            model.get_submodule(name).register_forward_hook(keep(name))
        mon = Monitor(model, publish=False)
        loss = model(torch.randn(64, 16)).pow(2).mean()
        for p in range(passes):
            loss.backward(retain_graph=p + 1 < passes)  # type: ignore[no-untyped-call]
        mon.step(loss)
        mon.close()
        t = mon.last
        assert t is not None and mon.faults == 0
        for name in ("0", "1", "2"):
            want = float(torch.stack(got[name]).sum(0).norm())
            assert t.get(name, "out_grad_norm") == pytest.approx(want, rel=RTOL)


def test_hooked_outputs_are_freed_without_a_gc_pass() -> None:
    """Guards against reference cycles through the capture (e.g. output -> grad_fn -> hook ->
    output): with the garbage collector off, a step's graph and outputs must still be freed."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = _big_model()
    mon = Monitor(model, publish=False)
    refs: list[weakref.ref[torch.Tensor]] = []
    model[0].register_forward_hook(lambda _m, _i, out: refs.append(weakref.ref(out)))
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            loss = model(torch.randn(64, 16)).pow(2).mean()
            model.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            mon.step(loss)
            del loss
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
        mon.close()
