"""Update ratio ||w_after - w_before|| / ||w_before|| across one optimiser step.

A snapshot is two ``torch.cat`` of cached views of every parameter into one reused flat buffer,
and the difference two more ``cat`` + subtract + segmented sum: a handful of device ops whatever
the model's depth, and no allocation on the step path. Copying every weight is a memcpy of the
whole model, so by default a tensor larger than ``sample`` elements contributes ``sample // 16``
blocks of 16 consecutive elements (one 64-byte cache line of float32) spread evenly over it, and
its squared difference is scaled by ``numel / sampled``. Block, not element, sampling: an
element-strided sample with a stride under 16 touches every cache line, costing as much memory
traffic as the full copy (measured).
Tensors no larger than ``sample`` (and ``sample=None``) are exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEFAULT_SAMPLE = 4096
"""Elements per parameter tensor used for the update ratio (documented in docs/statistics.md)."""

BLOCK = 16


def _block_view(p: torch.Tensor, sample: int) -> torch.Tensor:
    """A ``[blocks, BLOCK]`` view of evenly spaced runs of ``p``'s elements."""
    n = p.numel()
    blocks = max(1, sample // BLOCK)
    spacing = n // blocks
    last = p.shape[-1] if p.dim() else 1
    # A spacing that is a multiple of the row length would revisit the same columns.
    while spacing > BLOCK and spacing % last == 0:
        spacing -= 1
    blocks = min(blocks, n // spacing)
    return p.view(-1)[: blocks * spacing].view(blocks, spacing)[:, :BLOCK]


class UpdateTracker:
    """Snapshots parameters and measures per-parameter ||Δw||² against the snapshot."""

    def __init__(self, params: tuple[nn.Parameter, ...], sample: int | None) -> None:
        self._params = params
        self._sample = sample
        self.scale: list[float] = []
        """Per-parameter factor turning a sampled ||Δw||² into an estimate of the full one."""
        self._ptr = 0
        self._build_views()
        self._snap: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None

    def _build_views(self) -> None:
        # Views share storage, so the cached ones see the optimiser's in-place updates.
        # Non-contiguous parameters (e.g. channels_last) are copied whole at each use instead.
        self._whole: list[int] = []
        self._blocked: list[int] = []
        self._views: list[torch.Tensor] = []
        self._block_views: list[torch.Tensor] = []
        self._dynamic: list[int] = []
        lengths: dict[int, int] = {}
        for j, p in enumerate(self._params):
            d = p.detach()
            n = p.numel()
            s = self._sample
            if not p.is_contiguous():
                self._dynamic.append(j)
                self._whole.append(j)
                self._views.append(d.reshape(-1))
                lengths[j] = n
            elif s is None or n <= max(s, 2 * BLOCK):
                self._whole.append(j)
                self._views.append(d.view(-1))
                lengths[j] = n
            else:
                v = _block_view(d, s)
                self._blocked.append(j)
                self._block_views.append(v)
                lengths[j] = v.numel()
        self.scale = [
            p.numel() / lengths[j] if lengths[j] else 0.0 for j, p in enumerate(self._params)
        ]
        device = self._params[0].device if self._params else torch.device("cpu")
        self._device = device
        order = self._whole + self._blocked
        self._lengths = torch.tensor([lengths[j] for j in order], dtype=torch.long, device=device)
        # Results come out in (whole, blocked) order; this puts them back in parameter order.
        inverse = [0] * len(order)
        for pos, j in enumerate(order):
            inverse[j] = pos
        self._inverse = torch.tensor(inverse, dtype=torch.long, device=device)
        # CPU: numpy's reduceat sums the segments ~5x faster than segment_reduce (measured).
        # Zero-length segments hold no elements, so reduceat over the others' starts is exact.
        lens = np.asarray([lengths[j] for j in order], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else lens
        self._nz = np.flatnonzero(lens > 0)
        self._nz_starts = starts[self._nz]
        self._inverse_np = np.asarray(inverse, dtype=np.int64)
        views_w = [self._views[pos] for pos in range(len(self._whole))]
        self._n_whole = sum(v.numel() for v in views_w)
        self._n_block = sum(v.numel() for v in self._block_views)
        self._all_f32 = all(p.dtype == torch.float32 for p in self._params)
        self._ptr = self._params[0].data_ptr() if self._params else 0

    def _storage_moved(self) -> bool:
        """``model.to(...)``/``.half()`` swap ``param.data``: the cached views then watch dead
        storage. One pointer comparison notices; the views are rebuilt."""
        if self._params and self._params[0].data_ptr() != self._ptr:
            self._build_views()
            self._snap = self._spare = None
            return True
        return False

    @property
    def has_snapshot(self) -> bool:
        return self._snap is not None

    def _flat(self, out: torch.Tensor | None) -> torch.Tensor:
        """Copy the (whole, blocked) views into one flat float32 buffer (new if ``out`` is None):
        two ``cat`` calls writing into its two halves, so a difference is one op over it."""
        views = self._views
        if self._dynamic:
            views = list(views)
            for pos, j in enumerate(self._whole):
                if j in self._dynamic:
                    views[pos] = self._params[j].detach().reshape(-1)
        blocks = self._block_views
        n_whole, n_block = self._n_whole, self._n_block
        f32 = self._all_f32
        with torch.no_grad():
            if out is None or out.numel() != n_whole + n_block:
                out = torch.empty(n_whole + n_block, dtype=torch.float32, device=self._device)
            if views:
                if f32:
                    torch.cat(views, out=out[:n_whole])
                else:
                    out[:n_whole].copy_(torch.cat([v.float() for v in views]))
            if blocks:
                dst = out[n_whole:].view(-1, BLOCK)
                if f32:
                    torch.cat(blocks, out=dst)
                else:
                    dst.copy_(torch.cat([v.float() for v in blocks]))
        return out

    def snapshot(self) -> None:
        """Remember the current (sampled) parameter values."""
        if not self._params:
            return
        self._storage_moved()
        if self._snap is None:  # reuse the spare buffer: no allocation on the step path
            self._snap, self._spare = self._spare, None
        self._snap = self._flat(self._snap)

    def drop(self) -> None:
        """Forget the snapshot (a step whose update is not measured); its buffer is kept."""
        if self._snap is not None:
            self._spare, self._snap = self._snap, None

    def diff_sq(self, *, roll: bool) -> torch.Tensor | None:
        """Per-parameter sampled ||w_now - w_snapshot||² (float32, on the parameters' device).

        Args:
            roll: keep the current values as the new snapshot (the fallback without optimiser
                hooks measures consecutive ``Monitor.step`` calls); otherwise drop it.
        """
        if self._storage_moved():
            return None
        snap = self._snap
        if snap is None:
            return None
        with torch.no_grad():
            cur = self._flat(self._spare)
            if roll:
                d = torch.sub(cur, snap)
                self._snap, self._spare = cur, snap
            else:  # the snapshot is not needed again: difference in place (squared: sign-free)
                d = snap.sub_(cur)
                self._snap, self._spare = None, cur
            d.square_()
            if d.device.type == "cpu" and len(self._nz):
                sums = np.zeros(len(self._inverse_np), dtype=np.float64)
                sums[self._nz] = np.add.reduceat(d.numpy(), self._nz_starts, dtype=np.float64)
                return torch.from_numpy(sums[self._inverse_np].astype(np.float32))
            out = torch.segment_reduce(d, "sum", lengths=self._lengths)[self._inverse]
        return out
