"""Which modules of a model are watched, in model order, and what each row measures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from gradtui.protocol import LayerInfo

ROOT_NAME = "(root)"
"""Row name for parameters owned directly by the model itself (its module path is empty)."""

# Output bounds of saturating activations: saturated = within margin * (hi - lo) of a bound.
# Order matters: ReLU6 subclasses Hardtanh but is a ReLU-family unit, so it is checked first.
_DEAD_KINDS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
_SAT_KINDS: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softsign,
)
_OTHER_ACT_KINDS: tuple[type[nn.Module], ...] = (
    nn.Softplus,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Threshold,
)


def saturation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """The (lo, hi) output bounds of a saturating activation, or None."""
    if isinstance(module, _DEAD_KINDS):
        return None
    if isinstance(module, nn.Sigmoid | nn.Hardsigmoid):
        return (0.0, 1.0)
    if isinstance(module, nn.Tanh | nn.Softsign):
        return (-1.0, 1.0)
    if isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))
    return None


def is_activation(module: nn.Module) -> bool:
    """True for the element-wise activation modules that get activation statistics."""
    return isinstance(module, _DEAD_KINDS + _SAT_KINDS + _OTHER_ACT_KINDS)


@dataclass(frozen=True, slots=True)
class Row:
    """One watched module: its published :class:`LayerInfo` plus what the probe needs."""

    index: int
    info: LayerInfo
    module: nn.Module
    params: tuple[int, ...]
    """Indices into :attr:`Layout.params` of the parameters the module owns directly."""
    act: bool
    """Collect activation statistics (mean, std and, where defined, saturated/dead)."""
    sat: tuple[float, float] | None
    """Output bounds for the saturated fraction; None where it does not apply."""
    dead: bool
    """ReLU-family unit: the dead fraction applies."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The watched rows in model order and the model's unique parameters."""

    rows: tuple[Row, ...]
    params: tuple[nn.Parameter, ...]
    """Every unique parameter of the model, in first-owner order."""
    pair_rows: npt.NDArray[np.int64]
    """With :attr:`pair_params`: one (row, parameter) pair per direct ownership, rows
    ascending (host-side sums index with these arrays)."""
    pair_params: npt.NDArray[np.int64]
    channel_3d: bool
    """The model has 1-d convolutions, so 3-d outputs are (batch, channel, length)."""

    @property
    def infos(self) -> tuple[LayerInfo, ...]:
        return tuple(r.info for r in self.rows)


def _main_shape(params: list[tuple[str, nn.Parameter]]) -> tuple[int, ...]:
    for pname, p in params:
        if pname == "weight":
            return tuple(p.shape)
    return tuple(params[0][1].shape) if params else ()


def discover(model: nn.Module) -> Layout:
    """Rows: every module owning parameters directly (role ``param``) and every activation
    module (role ``act``), in ``named_modules`` order (registration order)."""
    rows: list[Row] = []
    params: list[nn.Parameter] = []
    seen: dict[int, int] = {}
    pair_rows: list[int] = []
    pair_params: list[int] = []
    channel_3d = False
    for path, module in model.named_modules():
        channel_3d = channel_3d or isinstance(module, nn.Conv1d | nn.ConvTranspose1d)
        own = [(n, p) for n, p in module.named_parameters(recurse=False)]
        act = is_activation(module)
        if not own and not act:
            continue
        idx: list[int] = []
        for _, p in own:
            j = seen.setdefault(id(p), len(params))
            if j == len(params):
                params.append(p)
            idx.append(j)
            pair_rows.append(len(rows))
            pair_params.append(j)
        info = LayerInfo(
            name=path or ROOT_NAME,
            kind=type(module).__name__,
            role="param" if own else "act",
            shape=_main_shape(own),
            params=sum(p.numel() for _, p in own),
        )
        rows.append(
            Row(
                index=len(rows),
                info=info,
                module=module,
                params=tuple(idx),
                act=act,
                sat=saturation_bounds(module),
                dead=isinstance(module, _DEAD_KINDS),
            )
        )
    return Layout(
        rows=tuple(rows),
        params=tuple(params),
        pair_rows=np.asarray(pair_rows, dtype=np.int64),
        pair_params=np.asarray(pair_params, dtype=np.int64),
        channel_3d=channel_3d,
    )


def unit_dim(t: torch.Tensor, channel_3d: bool) -> int | None:
    """The dimension that indexes units for the dead fraction: features of a (batch, features)
    output, channels of a conv output, the last dim of a (batch, seq, features) output."""
    nd = t.dim()
    if nd == 0:
        return None
    if nd == 1:
        return 0
    if nd == 2 or nd >= 4 or channel_3d:
        return 1
    return nd - 1
