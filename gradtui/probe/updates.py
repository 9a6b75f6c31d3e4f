"""Update ratio ||w_after - w_before|| / ||w_before|| across one optimiser step.

A snapshot is one ``torch.cat`` of cached views of every parameter into a flat buffer, and the
difference one more ``cat`` + subtract + segmented sum: a handful of device ops whatever the
model's depth. Copying every weight is a memcpy of the whole model, so by default each tensor
contributes a fixed strided sample of at most ``sample`` elements and its squared difference is
scaled by ``numel / sampled``; tensors no larger than ``sample`` (and ``sample=None``) are exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_SAMPLE = 4096
"""Elements per parameter tensor used for the update ratio (documented in docs/statistics.md)."""


def _stride(p: nn.Parameter, sample: int | None) -> int:
    n = p.numel()
    if sample is None or n <= sample:
        return 1
    s = -(-n // sample)
    # A stride coprime with the last dim walks every row and column instead of a column subset.
    last = p.shape[-1] if p.dim() else 1
    while math.gcd(s, last) != 1:
        s += 1
    return s


class UpdateTracker:
    """Snapshots parameters and measures per-parameter ||Δw||² against the snapshot."""

    def __init__(self, params: tuple[nn.Parameter, ...], sample: int | None) -> None:
        self._params = params
        self._strides = [_stride(p, sample) for p in params]
        lengths = [len(range(0, p.numel(), s)) for p, s in zip(params, self._strides, strict=True)]
        self._lengths_list = lengths
        self.scale = [p.numel() / n if n else 0.0 for p, n in zip(params, lengths, strict=True)]
        """Per-parameter factor turning a sampled ||Δw||² into an estimate of the full one."""
        self._views: list[torch.Tensor | None] = []
        self._ptr = 0
        self._lengths = torch.zeros(0, dtype=torch.long)
        self._build_views()
        self._snap: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None

    def _build_views(self) -> None:
        # view(-1) shares storage, so the cached view sees the optimiser's in-place updates;
        # non-contiguous parameters (e.g. channels_last) are re-sampled at each use instead.
        self._views = [
            p.detach().view(-1)[::s] if p.is_contiguous() else None
            for p, s in zip(self._params, self._strides, strict=True)
        ]
        self._dynamic = any(v is None for v in self._views)
        self._ptr = self._params[0].data_ptr() if self._params else 0
        device = self._params[0].device if self._params else torch.device("cpu")
        self._lengths = torch.tensor(self._lengths_list, dtype=torch.long, device=device)

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
        views = self._views
        if self._dynamic:
            views = [
                v if v is not None else p.detach().reshape(-1)[::s]
                for v, p, s in zip(self._views, self._params, self._strides, strict=True)
            ]
        with torch.no_grad():
            if out is None:
                return torch.cat([v.float() for v in views])  # type: ignore[union-attr]
            return torch.cat(views, out=out)  # type: ignore[arg-type]

    def snapshot(self) -> None:
        """Remember the current (sampled) parameter values."""
        if not self._params:
            return
        self._storage_moved()
        self._snap = self._flat(self._snap)

    def drop(self) -> None:
        """Forget the snapshot (a step whose update is not measured)."""
        self._snap = None

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
            d = torch.sub(cur, snap)
            d.square_()
            out = torch.segment_reduce(d, "sum", lengths=self._lengths)
        if roll:
            self._snap, self._spare = cur, snap
        else:
            self._snap, self._spare = None, snap
        return out
