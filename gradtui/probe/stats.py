"""Batched device computation of one step's statistics, and their host-side assembly.

On the device each family of numbers is one or two ops over all tensors at once
(``torch._foreach_norm`` over every gradient, one ``stack`` per group of same-shaped
activations); everything ends in a single flat float32 vector, moved to the host in one copy.
Per-row sums (several parameters per module, several calls per module) happen on the host in
float64 numpy, where they cost microseconds and lose no precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gradtui.probe.layers import Layout, unit_dim
from gradtui.protocol import COLUMNS

COL = {name: i for i, name in enumerate(COLUMNS)}
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.coalesce().values() if t.is_sparse else t


def norms(ts: list[torch.Tensor], order: float, device: torch.device) -> torch.Tensor:
    """Per-tensor vector norms as one float32 tensor on ``device``.

    One ``_foreach_norm`` normally; a per-tensor loop only for what it rejects (sparse
    gradients, tensors spread over several devices).
    """
    if not ts:
        return torch.zeros(0, device=device)
    try:
        # dtype=float32 makes bf16/fp16 norms accumulate and round in float32.
        return torch.stack(torch._foreach_norm(ts, order, dtype=torch.float32))
    except (RuntimeError, TypeError, NotImplementedError):
        pass
    try:  # float64 tensors refuse a narrowing dtype=: norm in their own precision
        return torch.stack([r.float() for r in torch._foreach_norm(ts, order)])
    except (RuntimeError, TypeError, NotImplementedError):
        return torch.stack([_one_norm(t, order).to(device) for t in ts])


def _one_norm(t: torch.Tensor, order: float) -> torch.Tensor:
    t = _dense(t)
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    out: torch.Tensor = torch.linalg.vector_norm(t, order).float()
    return out


BIG_TENSOR = 16384
"""Mean elements per tensor above which per-tensor ``aminmax`` beats the batched abs+max."""


def abs_max(ts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Per-tensor max |x| as one float32 tensor.

    ``_foreach_norm(ord=inf)`` is not vectorised on CPU (measured 7 ms for a 1.3M-parameter
    model). Small tensors: ``_foreach_max(_foreach_abs(...))``, two batched calls. Large ones:
    one ``aminmax`` per tensor, which reads each once and allocates no ``|x|`` copy.
    """
    if not ts:
        return torch.zeros(0, device=device)
    try:
        if device.type == "cpu" and sum(t.numel() for t in ts) > BIG_TENSOR * len(ts):
            pairs = [torch.aminmax(t) for t in ts]
            lo = torch.stack([p[0] for p in pairs])
            hi = torch.stack([p[1] for p in pairs])
            return torch.maximum(hi, lo.neg()).float()
        return torch.stack(torch._foreach_max(torch._foreach_abs(ts))).float()
    except (RuntimeError, TypeError, NotImplementedError, AttributeError):
        return norms(ts, math.inf, device)


def nonfinite_counts(ts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Per-tensor count of NaN/Inf entries without a host sync: x*0 is 0 where x is finite and
    NaN where it is not, and the 0-"norm" counts the non-zeros."""
    if not ts:
        return torch.zeros(0, device=device)
    try:
        # In chunks, so the x*0 temporaries never exceed CHUNK elements beyond one tensor.
        out, chunk, size = [], [], 0
        for t in ts:
            chunk.append(t)
            size += t.numel()
            if size >= CHUNK:
                out.append(norms(list(torch._foreach_mul(chunk, 0.0)), 0, device))
                chunk, size = [], 0
        if chunk:
            out.append(norms(list(torch._foreach_mul(chunk, 0.0)), 0, device))
        return torch.cat(out)
    except (RuntimeError, TypeError, NotImplementedError):
        return torch.stack([(~torch.isfinite(_dense(t))).sum().float().to(device) for t in ts])


CHUNK = 1 << 24
"""Elements per batch of the accelerator non-finite count (64 MiB of float32 temporaries)."""


@dataclass(slots=True)
class ActGroup:
    """Activation outputs of one shape/kind, reduced together after one ``stack``."""

    rows: list[int] = field(default_factory=list)
    numel: int = 0
    units: int = 0
    sat: bool = False
    dead: bool = False


@dataclass(slots=True)
class Parts:
    """The device tensors of one step, in vector order, and what the host needs to read them."""

    tensors: list[torch.Tensor] = field(default_factory=list)
    grad_slots: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    """Parameter index of each gradient, in vector order."""
    n_params: int = 0
    host_nonfinite: F64 | None = None
    """Non-finite counts computed on the host (CPU) instead of in the vector."""
    og_rows: list[int] = field(default_factory=list)
    groups: list[ActGroup] = field(default_factory=list)
    update_scale: F64 | None = None
    """Set when the vector ends with sampled per-parameter ||Δw||²: their scale factors."""
    tensor_loss: bool = False
    tensor_acc: bool = False


def param_parts(layout: Layout, parts: Parts, device: torch.device) -> list[torch.Tensor]:
    """Gradient norms, gradient max |g|, weight norms (and on accelerators non-finite counts).

    Returns:
        The gradients read, for a host-side non-finite count on CPU.
    """
    params = layout.params
    grads = [p.grad for p in params]
    # Not `None in grads`: that calls Tensor.__eq__ per element (measured 0.5 ms for 42 grads).
    if any(g is None for g in grads):
        slots = [j for j, g in enumerate(grads) if g is not None]
        dense = [g for g in grads if g is not None]
    else:
        slots = list(range(len(params)))
        dense = grads  # type: ignore[assignment]
    parts.grad_slots = np.asarray(slots, dtype=np.int64)
    parts.n_params = len(params)
    # One call for gradient and weight L2 norms: the per-call overhead is paid once. The
    # caller runs under no_grad, so parameters need no (1.8 µs each) detach().
    both = norms([*dense, *params], 2, device)
    parts.tensors.append(both)
    parts.tensors.append(abs_max(dense, device))
    if device.type != "cpu":
        parts.tensors.append(nonfinite_counts(dense, device))
    return dense


def out_grad_parts(
    grads: list[torch.Tensor], rows: list[int], parts: Parts, device: torch.device
) -> None:
    parts.og_rows = rows
    parts.tensors.append(norms(grads, 2, device))


DEFAULT_ACT_SAMPLE = 8192
"""Elements per output used for act_mean/act_std/act_saturated (act_dead always uses all)."""


def sample_rows(t: torch.Tensor, sample: int | None) -> int:
    """How many leading batch entries make a sample of about ``sample`` elements (0: all).

    A leading slice is a contiguous view: copying it moves only the sample, where an
    element-strided sample with a small stride touches every cache line of the output.
    """
    if sample is None or t.dim() < 2 or t.numel() <= sample:
        return 0
    per_row = t.numel() // t.shape[0]
    rows = max(1, -(-sample // per_row))
    return rows if rows < t.shape[0] else 0


def act_parts(
    layout: Layout,
    outs: list[list[torch.Tensor]],
    margin: float,
    parts: Parts,
    device: torch.device,
    sample: int | None = DEFAULT_ACT_SAMPLE,
) -> None:
    """Mean, std, saturated fraction and dead fraction per captured output, grouped by
    shape so a depth-N network of equal widths costs a few ops, not a few per layer.

    Mean, std and saturation read the leading batch entries of each output, about ``sample``
    elements (None: all); the dead fraction always reads every element."""
    keyed: dict[tuple[object, ...], tuple[ActGroup, list[torch.Tensor]]] = {}
    for row, ts in zip(layout.rows, outs, strict=True):
        for t in ts:
            key = (t.shape, t.dtype, t.device, row.sat, row.dead)
            entry = keyed.get(key)
            if entry is None:
                unit = unit_dim(t, layout.channel_3d) if row.dead else None
                group = ActGroup(
                    numel=t.numel(),
                    units=t.shape[unit] if unit is not None else 0,
                    sat=row.sat is not None,
                    dead=unit is not None,
                )
                entry = keyed[key] = (group, [])
            entry[0].rows.append(row.index)
            entry[1].append(t)
    for gkey, (group, ts) in keyed.items():
        if group.numel == 0:
            continue
        k = len(ts)
        rows = sample_rows(ts[0], sample)
        x = None
        if group.dead or not rows:
            x = torch.stack(ts) if k > 1 else ts[0].unsqueeze(0)
            if x.dtype != torch.float32:
                x = x.float()
            flat = x[:, :rows].reshape(k, -1) if rows else x.reshape(k, -1)
        else:  # copy only the sample
            flat = torch.stack([t[:rows] for t in ts]).float().reshape(k, -1)
        n = flat.shape[1]
        # Two-pass mean/std from sum and norm: torch.std_mean over dim 1 measured ~100x slower
        # on CPU, and E[x²]-mean² would cancel catastrophically for saturated outputs.
        mean = flat.sum(1) / n
        std = torch.linalg.vector_norm(flat - mean[:, None], dim=1) / math.sqrt(n)
        parts.tensors += [mean.to(device), std.to(device)]
        bounds = gkey[3]
        if isinstance(bounds, tuple):
            lo, hi = bounds
            half = (hi - lo) / 2
            # Within margin*(hi-lo) of either bound <=> v = |x - centre| - (half - m) >= 0, and
            # sign(v) + 1 clamped to 1 is that indicator. Comparisons and bool->float casts
            # measured 10-20x slower than this arithmetic on CPU.
            v = (flat - (lo + half)).abs_().sub_(half - margin * (hi - lo))
            near = v.sign_().add_(1.0).clamp_(max=1.0).sum(1)
            parts.tensors.append((near / n).to(device))
        if group.dead:
            unit = unit_dim(ts[0], layout.channel_3d)
            assert unit is not None and x is not None
            dims = [d + 1 for d in range(ts[0].dim()) if d != unit]
            peak = x.amax(dim=dims) if dims else x
            dead = (peak <= 0).sum(1, dtype=torch.float32) / peak.shape[1]
            parts.tensors.append(dead.to(device))
        parts.groups.append(group)


def _row_norm(rows: I64, values: F64, n_rows: int) -> tuple[F64, npt.NDArray[np.bool_]]:
    """sqrt of per-row sums of squares, and which rows had any value."""
    sq = np.bincount(rows, weights=values * values, minlength=n_rows)
    has = np.bincount(rows, minlength=n_rows) > 0
    return np.sqrt(sq), has


def assemble(
    layout: Layout,
    parts: Parts,
    vec: npt.NDArray[np.float32],
    numel: F64,
    cache: dict[bytes, tuple[Any, ...]] | None = None,
) -> tuple[npt.NDArray[np.float32], float, float, float]:
    """Build the ``[rows, COLUMNS]`` float32 table from the host vector.

    Args:
        numel: element count of each parameter (float64), in ``layout.params`` order.
        cache: index arrays of earlier calls with the same layout (the caller keeps one per
            layout; they depend only on which parameters had gradients).

    Returns:
        ``(table, total_grad_norm, loss, acc)``; loss/acc NaN where not tensors.
    """
    n_rows = len(layout.rows)
    table = np.full((n_rows, len(COLUMNS)), np.nan, dtype=np.float32)
    v = vec.astype(np.float64)
    pos = 0

    def take(n: int) -> F64:
        nonlocal pos
        out = v[pos : pos + n]
        pos += n
        return out

    n_p = parts.n_params
    slots = parts.grad_slots
    g = len(slots)
    gn = take(g)
    wn = take(n_p)
    gmax = take(g)
    nonfinite = take(g) if parts.host_nonfinite is None else parts.host_nonfinite
    pair_rows, pair_params = layout.pair_rows, layout.pair_params

    # Gradients: scatter per-gradient values to per-parameter, then sum over each row's pairs.
    # The index arrays depend only on which parameters have gradients: cached per pattern.
    key = slots.tobytes()
    geo = cache.get(key) if cache is not None else None
    if geo is None:
        has_grad = np.zeros(n_p, dtype=bool)
        has_grad[slots] = True
        mask = has_grad[pair_params]
        g_rows, g_params = pair_rows[mask], pair_params[mask]
        # rows ascending: a max per run of equal rows (NaN propagates)
        starts = np.flatnonzero(np.concatenate([[True], g_rows[1:] != g_rows[:-1]]))
        g_numel = np.bincount(g_rows, weights=numel[g_params], minlength=n_rows)
        g_any = np.bincount(g_rows, minlength=n_rows) > 0
        geo = (g_rows, g_params, starts, g_numel, g_any)
        if cache is not None:
            if len(cache) > 16:
                cache.clear()
            cache[key] = geo
    g_rows, g_params, starts, g_numel, g_has = geo
    per_param = np.full((3, n_p), np.nan)
    per_param[0, slots] = gn
    per_param[1, slots] = gmax
    per_param[2, slots] = nonfinite
    gp = per_param[:, g_params]
    gnorm = np.sqrt(np.bincount(g_rows, weights=gp[0] * gp[0], minlength=n_rows))
    gmax_row = np.full(n_rows, np.nan)
    if len(g_rows):
        gmax_row[g_rows[starts]] = np.maximum.reduceat(gp[1], starts)
    nf_row = np.bincount(g_rows, weights=gp[2], minlength=n_rows)
    table[:, COL["grad_norm"]] = np.where(g_has, gnorm, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        table[:, COL["grad_rms"]] = np.where(g_has, gnorm / np.sqrt(g_numel), np.nan)
    table[:, COL["grad_max"]] = np.where(g_has, gmax_row, np.nan)
    table[:, COL["grad_nonfinite"]] = np.where(g_has, nf_row, np.nan)

    wnorm, w_has = _row_norm(pair_rows, wn[pair_params], n_rows)
    table[:, COL["weight_norm"]] = np.where(w_has, wnorm, np.nan)

    og = take(len(parts.og_rows))
    if len(og):
        ognorm, og_has = _row_norm(np.asarray(parts.og_rows, dtype=np.int64), og, n_rows)
        table[:, COL["out_grad_norm"]] = np.where(og_has, ognorm, np.nan)

    _assemble_acts(parts, take, table, n_rows)

    total = float(np.sqrt(np.sum(gn * gn))) if g else math.nan
    loss = float(take(1)[0]) if parts.tensor_loss else math.nan
    acc = float(take(1)[0]) if parts.tensor_acc else math.nan
    if parts.update_scale is not None:
        # Update ratio: sampled squared differences scaled to the full tensor, summed per row,
        # over the row's weight norm measured before the step.
        du = take(n_p) * parts.update_scale
        dnorm, _ = _row_norm(pair_rows, np.sqrt(np.maximum(du[pair_params], 0.0)), n_rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            table[:, COL["update_ratio"]] = np.where(w_has, dnorm / wnorm, np.nan)
    return table, total, loss, acc


def _assemble_acts(
    parts: Parts, take: Callable[[int], F64], table: npt.NDArray[np.float32], n_rows: int
) -> None:
    if not parts.groups:
        return
    rows_l: list[int] = []
    n_l: list[float] = []
    mean_l: list[F64] = []
    std_l: list[F64] = []
    sat_rows: list[int] = []
    sat_l: list[F64] = []
    sat_n: list[float] = []
    dead_rows: list[int] = []
    dead_l: list[F64] = []
    dead_units: list[float] = []
    for grp in parts.groups:
        k = len(grp.rows)
        rows_l += grp.rows
        n_l += [float(grp.numel)] * k
        mean_l.append(take(k))
        std_l.append(take(k))
        if grp.sat:
            sat_rows += grp.rows
            sat_l.append(take(k))
            sat_n += [float(grp.numel)] * k
        if grp.dead:
            dead_rows += grp.rows
            dead_l.append(take(k))
            dead_units += [float(grp.units)] * k
    rows = np.asarray(rows_l, dtype=np.int64)
    n = np.asarray(n_l)
    mean = np.concatenate(mean_l)
    std = np.concatenate(std_l)
    # Several calls of one module combine as one population: pooled mean and variance.
    tot = np.bincount(rows, weights=n, minlength=n_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.bincount(rows, weights=n * mean, minlength=n_rows) / tot
        ex2 = np.bincount(rows, weights=n * (std * std + mean * mean), minlength=n_rows) / tot
        var = np.maximum(ex2 - mu * mu, 0.0)
        # One call (the common case) keeps torch's own std, free of the E[x²]-μ² rounding.
        calls = np.bincount(rows, minlength=n_rows)
        single_std = np.zeros(n_rows)
        single_std[rows] = std
        has = tot > 0
        table[:, COL["act_mean"]] = np.where(has, mu, np.nan)
        table[:, COL["act_std"]] = np.where(
            has, np.where(calls == 1, single_std, np.sqrt(var)), np.nan
        )
        if sat_rows:
            sr = np.asarray(sat_rows, dtype=np.int64)
            sn = np.asarray(sat_n)
            st = np.bincount(sr, weights=sn, minlength=n_rows)
            frac = np.bincount(sr, weights=sn * np.concatenate(sat_l), minlength=n_rows) / st
            table[:, COL["act_saturated"]] = np.where(st > 0, frac, np.nan)
        if dead_rows:
            dr = np.asarray(dead_rows, dtype=np.int64)
            du = np.asarray(dead_units)
            dt = np.bincount(dr, weights=du, minlength=n_rows)
            frac = np.bincount(dr, weights=du * np.concatenate(dead_l), minlength=n_rows) / dt
            table[:, COL["act_dead"]] = np.where(dt > 0, frac, np.nan)
