"""The trainer's networks: names, order, switches, init, and the gradient physics they show."""

from __future__ import annotations

import math
from typing import cast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.cli import Activation
from trainer.data import SyntheticTask
from trainer.model import Block, Net, build_model


def _mlp(**kw: object) -> Net:
    args: dict[str, object] = {
        "arch": "mlp",
        "in_shape": (1, 28, 28),
        "classes": 10,
        "depth": 4,
        "width": 16,
        "act": "relu",
    }
    args.update(kw)
    return build_model(**args)  # type: ignore[arg-type]


def _block(net: Net, i: int) -> Block:
    return cast(Block, net.blocks[i])


def _linear(net: Net, i: int) -> nn.Linear:
    layer = _block(net, i).linear
    assert isinstance(layer, nn.Linear)
    return layer


def test_module_names_read_well() -> None:
    """Guards the dashboard's row names: blocks.i.linear / .bn / .act, norm, head."""
    names = [n for n, _ in _mlp(depth=2, bn=True, residual=True).named_modules()]
    assert names == [
        "",
        "flatten",
        "blocks",
        "blocks.0",
        "blocks.0.linear",
        "blocks.0.bn",
        "blocks.0.act",
        "blocks.1",
        "blocks.1.linear",
        "blocks.1.bn",
        "blocks.1.act",
        "norm",
        "head",
    ]
    cnn = build_model(arch="cnn", in_shape=(3, 32, 32), classes=10, depth=2, width=4, act="tanh")
    assert [n for n, _ in cnn.named_modules() if n.startswith("blocks.1")] == [
        "blocks.1",
        "blocks.1.conv",
        "blocks.1.act",
    ]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_registration_order_is_forward_order(arch: str) -> None:
    """Guards 'model order = forward order': the probe lists rows in registration order."""
    net = build_model(
        arch=arch,  # type: ignore[arg-type]
        in_shape=(1, 28, 28),
        classes=10,
        depth=3,
        width=4,
        act="relu",
        bn=True,
        residual=True,
    )
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    called: list[str] = []
    for name, module in leaves:
        module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
    net(torch.randn(2, 1, 28, 28))
    assert called == [n for n, _ in leaves]


@pytest.mark.parametrize(
    ("act", "cls"),
    [
        ("sigmoid", nn.Sigmoid),
        ("tanh", nn.Tanh),
        ("relu", nn.ReLU),
        ("leaky_relu", nn.LeakyReLU),
        ("gelu", nn.GELU),
    ],
)
def test_activations_are_modules(act: Activation, cls: type[nn.Module]) -> None:
    """Guards functional activations sneaking in: the probe only sees nn modules."""
    net = _mlp(act=act, depth=3)
    acts = [m for n, m in net.named_modules() if n.endswith(".act")]
    assert len(acts) == 3 and all(type(m) is cls for m in acts)


def test_bn_sits_before_the_activation_and_drops_the_bias() -> None:
    """Guards BN placement (pre-activation) and the redundant Linear bias under BN."""
    net = _mlp(bn=True, depth=2)
    block, linear = _block(net, 1), _linear(net, 1)
    assert linear.bias is None and block.bn is not None
    x = torch.randn(8, 16)
    assert torch.allclose(block(x), block.act(block.bn(linear(x))))
    assert _linear(_mlp(bn=False), 1).bias is not None


def test_residual_adds_the_input_except_where_shapes_change() -> None:
    """Guards x + f(x) blocks, and that blocks.0 (784 -> width) is not residual."""
    net = _mlp(residual=True, depth=3)
    assert [_block(net, i).residual for i in range(3)] == [False, True, True]
    x = torch.randn(8, 16)
    assert torch.allclose(_block(net, 1)(x), x + _block(net, 1).act(_linear(net, 1)(x)))
    assert not any(_block(_mlp(residual=False), i).residual for i in range(4))


@pytest.mark.parametrize(
    ("shape", "arch"), [((1, 28, 28), "mlp"), ((3, 32, 32), "mlp"), ((3, 32, 32), "cnn")]
)
def test_shapes_follow_the_dataset(shape: tuple[int, int, int], arch: str) -> None:
    """Guards input sizing: the same switches work for MNIST- and CIFAR-shaped inputs."""
    net = build_model(
        arch=arch,  # type: ignore[arg-type]
        in_shape=shape,
        classes=10,
        depth=3,
        width=8,
        act="gelu",
        bn=True,
    )
    assert net(torch.randn(5, *shape)).shape == (5, 10)


def _weight_std(act: Activation, init: str) -> float:
    torch.manual_seed(0)
    net = _mlp(act=act, init=init, width=512, depth=2)
    return float(_linear(net, 1).weight.detach().std())


def test_auto_init_is_xavier_for_sigmoid_and_kaiming_for_relu() -> None:
    """Guards --init auto: Glorot std sqrt(2/(in+out)) for sigmoid/tanh, He sqrt(2/in) for ReLU."""
    assert _weight_std("sigmoid", "auto") == pytest.approx(math.sqrt(2 / 1024), rel=0.05)
    assert _weight_std("tanh", "auto") == pytest.approx(math.sqrt(2 / 1024), rel=0.05)
    assert _weight_std("relu", "auto") == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert _weight_std("gelu", "auto") == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert _weight_std("relu", "xavier") == pytest.approx(math.sqrt(2 / 1024), rel=0.05)
    assert _weight_std("sigmoid", "kaiming") == pytest.approx(math.sqrt(1 / 512), rel=0.05)
    # PyTorch's own default: kaiming_uniform(a=sqrt(5)) -> std 1/sqrt(3 * fan_in).
    assert _weight_std("relu", "torch") == pytest.approx(math.sqrt(1 / 1536), rel=0.05)


def _first_over_last_grad_rms(**kw: object) -> float:
    torch.manual_seed(0)
    net = build_model(arch="mlp", in_shape=(1, 28, 28), classes=10, depth=20, width=64, **kw)  # type: ignore[arg-type]
    x, y = SyntheticTask(seed=0).batch(64)
    F.cross_entropy(net(x), y).backward()  # type: ignore[no-untyped-call]

    def rms(g: torch.Tensor | None) -> float:
        assert g is not None
        return float(g.norm() / math.sqrt(g.numel()))

    return rms(_linear(net, 0).weight.grad) / rms(net.head.weight.grad)


def test_sigmoid_depth_20_vanishes_and_the_remedies_fix_it() -> None:
    """Guards the demo's physics in-process: >1000x vanishing for sigmoid, <100x when fixed."""
    assert _first_over_last_grad_rms(act="sigmoid") < 1e-3
    assert _first_over_last_grad_rms(act="relu", bn=True, residual=True) > 1e-2
