"""The deep MLP and the plain deep conv stack the trainer demonstrates gradient flow on.

Module names are chosen to read well in the dashboard: ``blocks.3.linear``, ``blocks.3.bn``,
``blocks.3.act``, ``head``. Activations are ``nn`` modules (never functional) so the probe's
hooks see them, and registration order equals forward order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from trainer.cli import Activation, Arch, Init

_ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
_RELU_FAMILY: frozenset[Activation] = frozenset({"relu", "leaky_relu", "gelu"})
_LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default, needed again for Kaiming's gain


class Block(nn.Module):
    """One hidden layer: ``act(bn(layer(x)))``, plus ``x`` when residual."""

    def __init__(self, layer: nn.Module, bn: nn.Module | None, act: nn.Module, residual: bool):
        super().__init__()
        # Attribute order = registration order = forward order (the probe lists rows this way).
        self.linear = layer if isinstance(layer, nn.Linear) else None
        self.conv = layer if not isinstance(layer, nn.Linear) else None
        self.bn = bn
        self.act = act
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.linear if self.linear is not None else self.conv
        assert layer is not None
        y = layer(x)
        if self.bn is not None:
            y = self.bn(y)
        y = self.act(y)
        out: torch.Tensor = x + y if self.residual else y
        return out

    def extra_repr(self) -> str:
        return "residual" if self.residual else ""


class Net(nn.Module):
    """``flatten``/``blocks``/``head`` for the MLP; ``blocks``/``pool``/``head`` for the CNN.

    With BatchNorm and residual blocks a final ``norm`` (BatchNorm) sits before the pool/head:
    the residual stream's scale grows with depth (every ReLU branch adds a positive mean), and
    without it the head starts with huge logits.
    """

    def __init__(
        self, blocks: list[Block], head: nn.Linear, *, conv: bool, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.flatten = None if conv else nn.Flatten()
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if conv else None
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten is not None:
            x = self.flatten(x)
        x = self.blocks(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.pool is not None:
            x = self.pool(x)
        out: torch.Tensor = self.head(x)
        return out


def build_model(
    *,
    arch: Arch,
    in_shape: tuple[int, int, int],
    classes: int,
    depth: int,
    width: int,
    act: Activation,
    bn: bool = False,
    residual: bool = False,
    init: Init = "auto",
) -> Net:
    """Build the network (on the CPU; move it with ``.to(device)``).

    Args:
        arch: ``mlp`` (flatten, ``depth`` Linear blocks, head) or ``cnn`` (``depth`` 3x3 conv
            blocks, the first with stride 2, global average pool, head).
        in_shape: ``(channels, height, width)`` of one input sample.
        classes: number of output logits.
        depth: hidden layers (blocks).
        width: units (mlp) or channels (cnn) of every hidden layer.
        act: activation module after each hidden layer.
        bn: BatchNorm between each layer and its activation (the layer then has no bias).
        residual: ``x + f(x)`` for every block whose input and output shapes match, i.e. all but
            ``blocks.0`` (it changes the width / resolution). With ``bn`` too, a final ``norm``
            BatchNorm normalises the residual stream before the head.
        init: ``auto``, ``xavier``, ``kaiming`` or ``torch`` (PyTorch's own defaults).
    """
    channels, height, width_px = in_shape
    blocks: list[Block] = []
    for i in range(depth):
        layer: nn.Module
        if arch == "mlp":
            fan_in = channels * height * width_px if i == 0 else width
            layer = nn.Linear(fan_in, width, bias=not bn)
            norm: nn.Module | None = nn.BatchNorm1d(width) if bn else None
        else:
            # The first conv halves the resolution: a 20-deep stack at 28x28 is too slow on CPUs.
            layer = nn.Conv2d(
                channels if i == 0 else width,
                width,
                kernel_size=3,
                stride=2 if i == 0 else 1,
                padding=1,
                bias=not bn,
            )
            norm = nn.BatchNorm2d(width) if bn else None
        blocks.append(Block(layer, norm, _ACTIVATIONS[act](), residual=residual and i > 0))
    final_norm = None
    if bn and residual and depth > 1:
        final_norm = nn.BatchNorm1d(width) if arch == "mlp" else nn.BatchNorm2d(width)
    net = Net(blocks, nn.Linear(width, classes), conv=arch == "cnn", norm=final_norm)
    init_weights(net, act=act, init=init)
    return net


def init_weights(net: nn.Module, *, act: Activation, init: Init) -> None:
    """Re-initialise every Linear/Conv weight (biases to zero) unless ``init == "torch"``.

    ``auto`` picks Xavier (Glorot, gain 1) for sigmoid/tanh and Kaiming (He, fan-in, normal) for
    the ReLU family. The head gets the same scheme as the hidden layers.
    """
    if init == "torch":
        return
    scheme = init if init != "auto" else ("kaiming" if act in _RELU_FAMILY else "xavier")
    for module in net.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif act == "leaky_relu":
            nn.init.kaiming_normal_(module.weight, a=_LEAKY_SLOPE, nonlinearity="leaky_relu")
        else:
            # GELU has no gain of its own in torch; ReLU's is the usual stand-in.
            nonlinearity: Literal["tanh", "sigmoid", "relu"] = (
                "tanh" if act == "tanh" else "sigmoid" if act == "sigmoid" else "relu"
            )
            nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
