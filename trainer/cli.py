"""Command line of ``python -m trainer``: flags -> a validated :class:`TrainConfig`.

Only argparse and dataclasses are imported at module level so ``--help`` and flag errors are
instant; torch is imported by :mod:`trainer.loop` once the flags are known to be good.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeAlias

from gradtui.errors import GradtuiError

Activation: TypeAlias = Literal["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]
Init: TypeAlias = Literal["auto", "torch", "xavier", "kaiming"]
Optimizer: TypeAlias = Literal["sgd", "adam"]
Arch: TypeAlias = Literal["mlp", "cnn"]
Dataset: TypeAlias = Literal["synthetic", "mnist", "fashion-mnist", "cifar10"]
Device: TypeAlias = Literal["auto", "cpu", "cuda", "mps"]

ACTIVATIONS: tuple[Activation, ...] = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu")
INITS: tuple[Init, ...] = ("auto", "torch", "xavier", "kaiming")
OPTIMIZERS: tuple[Optimizer, ...] = ("sgd", "adam")
ARCHS: tuple[Arch, ...] = ("mlp", "cnn")
DATASETS: tuple[Dataset, ...] = ("synthetic", "mnist", "fashion-mnist", "cifar10")
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda", "mps")

# A conv layer at full width costs ~width^2 * 9 * H * W multiply-adds per sample, so the CNN
# gets a narrower default than the MLP to stay interactive on a laptop CPU.
DEFAULT_WIDTH: dict[Arch, int] = {"mlp": 256, "cnn": 16}
DEFAULT_LR: dict[Optimizer, float] = {"sgd": 0.05, "adam": 1e-3}
DEFAULT_MOMENTUM = 0.9


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Everything one training run needs; built from flags by :func:`parse_config`."""

    depth: int = 20
    """Number of hidden layers (blocks ``blocks.0`` .. ``blocks.{depth-1}``)."""
    width: int = DEFAULT_WIDTH["mlp"]
    """Units per hidden layer (MLP) or channels per conv layer (CNN)."""
    act: Activation = "sigmoid"
    bn: bool = False
    """BatchNorm between each hidden layer's linear/conv and its activation."""
    residual: bool = False
    """``x + f(x)`` blocks wherever input and output shapes match (all but ``blocks.0``)."""
    clip_norm: float | None = None
    clip_value: float | None = None
    init: Init = "auto"
    optimizer: Optimizer = "sgd"
    lr: float = DEFAULT_LR["sgd"]
    momentum: float = DEFAULT_MOMENTUM
    """SGD momentum (unused by Adam)."""
    batch_size: int = 128
    steps: int = 0
    """Training steps; 0 runs until Ctrl-C / SIGTERM."""
    arch: Arch = "mlp"
    dataset: Dataset = "synthetic"
    data_dir: str = "data"
    download: bool = False
    device: Device = "auto"
    seed: int = 0
    threads: int = 0
    """CPU threads for torch; 0 = auto (see :func:`trainer.loop.cpu_threads`)."""
    every: int = 1
    """Publish telemetry every N-th step."""
    endpoint: str | None = None
    """ZeroMQ endpoint to bind; None: a private ipc socket in the runtime directory."""
    relay: str | None = None
    """A ``gradtui relay`` frontend to also publish to (many nodes, one place to watch)."""
    name: str | None = None
    """Run name shown in the dashboard; None derives one from the config."""
    quiet: bool = False
    log_every: int = 100
    """Print a progress line every N steps when stdout is not a terminal."""
    record_dir: str | None = None
    """Where the run is recorded to SQLite (None: the recorder's default)."""
    record: bool = True
    """False with ``--no-record``."""

    def run_name(self) -> str:
        """The given ``--name`` or a short description such as ``mlp-d20-sigmoid+bn+res``."""
        if self.name:
            return self.name
        extras = [s for s, on in (("bn", self.bn), ("res", self.residual)) if on]
        if self.clip_norm is not None:
            extras.append(f"clip{self.clip_norm:g}")
        if self.clip_value is not None:
            extras.append(f"clipv{self.clip_value:g}")
        return "+".join([f"{self.arch}-d{self.depth}-{self.act}", *extras])

    def as_dict(self) -> dict[str, str | int | float | bool | None]:
        """Flat scalar mapping for the protocol's ``hello.config``."""
        return dataclasses.asdict(self)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trainer`` argument parser."""
    p = _Parser(
        prog="python -m trainer",
        description="Train a deep network and publish its gradient flow to gradtui.",
        epilog="Ctrl-C or SIGTERM ends the run cleanly (end status 'interrupted', exit code 0). "
        "A non-finite loss stops the run (end status 'crashed', exit code 1).",
    )
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=ARCHS, default="mlp", help="MLP or plain deep conv stack")
    m.add_argument("--depth", type=int, default=20, help="hidden layers (default 20)")
    m.add_argument(
        "--width", type=int, help="units per hidden layer (mlp, default 256) or channels (cnn, 16)"
    )
    m.add_argument("--act", choices=ACTIVATIONS, default="sigmoid", help="activation")
    m.add_argument("--bn", action="store_true", help="BatchNorm before each activation")
    m.add_argument("--residual", action="store_true", help="residual blocks x + f(x)")
    m.add_argument(
        "--init",
        choices=INITS,
        default="auto",
        help="weight init; auto: Xavier for sigmoid/tanh, Kaiming for the ReLU family; "
        "torch: PyTorch's layer defaults",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser")
    o.add_argument("--lr", type=float, help="learning rate (sgd 0.05, adam 0.001)")
    o.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    o.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    o.add_argument("--steps", type=int, default=0, help="steps to train; 0 = until Ctrl-C")
    o.add_argument("--clip-norm", type=float, metavar="X", help="clip total gradient norm to X")
    o.add_argument("--clip-value", type=float, metavar="X", help="clip each gradient to [-X, X]")
    d = p.add_argument_group("data and device")
    d.add_argument(
        "--dataset",
        choices=DATASETS,
        default="synthetic",
        help="synthetic (offline, MNIST-shaped, default) or a torchvision dataset",
    )
    d.add_argument("--data-dir", default="data", help="torchvision dataset root (default ./data)")
    d.add_argument("--download", action="store_true", help="download the dataset if missing")
    d.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda, mps, else cpu")
    d.add_argument("--seed", type=int, default=0, help="seed for data, init and shuffling")
    d.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads; 0 (default) = $OMP_NUM_THREADS if set, else half the cores "
        "(at most 4): several trainers sharing a CPU at full threads slow each other by 10x+",
    )
    t = p.add_argument_group("telemetry and output")
    t.add_argument("--every", type=int, default=1, help="publish telemetry every N steps")
    t.add_argument(
        "--endpoint",
        help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:5555 (default: a private ipc socket)",
    )
    t.add_argument(
        "--relay", metavar="ENDPOINT", help="also publish to this `gradtui relay --frontend`"
    )
    t.add_argument("--name", help="run name shown in the dashboard (default: from the flags)")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors")
    t.add_argument(
        "--log-every", type=int, default=100, help="progress line every N steps when not a TTY"
    )
    t.add_argument("--record-dir", metavar="DIR", help="directory for the SQLite recording")
    t.add_argument("--no-record", action="store_true", help="do not record the run to SQLite")
    return p


def _bad(message: str) -> NoReturn:
    raise GradtuiError(message, code=2)


def _positive(flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        _bad(f"{flag} must be a positive number, got {value:g}")


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """Validate parsed flags and fill arch/optimiser-dependent defaults.

    Raises:
        GradtuiError: (code 2) a bad value or combination, with a one-line message.
    """
    for flag, value, low in (
        ("--depth", ns.depth, 1),
        ("--batch-size", ns.batch_size, 1),
        ("--steps", ns.steps, 0),
        ("--every", ns.every, 1),
        ("--log-every", ns.log_every, 1),
        ("--seed", ns.seed, 0),
        ("--threads", ns.threads, 0),
    ):
        if value < low:
            _bad(f"{flag} must be at least {low}, got {value}")
    if ns.width is not None and ns.width < 1:
        _bad(f"--width must be at least 1, got {ns.width}")
    _positive("--lr", ns.lr)
    _positive("--clip-norm", ns.clip_norm)
    _positive("--clip-value", ns.clip_value)
    if ns.clip_norm is not None and ns.clip_value is not None:
        _bad("use one of --clip-norm and --clip-value, not both")
    if ns.momentum is not None:
        if ns.optimizer != "sgd":
            _bad("--momentum applies to --optimizer sgd only")
        if not (math.isfinite(ns.momentum) and 0 <= ns.momentum < 1):
            _bad(f"--momentum must be in [0, 1), got {ns.momentum:g}")
    if ns.relay is not None and "://" not in ns.relay:
        _bad(f"--relay must look like tcp://host:5555, got {ns.relay!r}")
    if ns.endpoint is not None and "://" not in ns.endpoint:
        _bad(f"--endpoint must look like tcp://127.0.0.1:5555 or ipc:///path, got {ns.endpoint!r}")
    if ns.name is not None and not 0 < len(ns.name) <= 128:
        _bad("--name must be 1 to 128 characters")
    if ns.no_record and ns.record_dir is not None:
        _bad("--record-dir and --no-record contradict each other")
    return TrainConfig(
        depth=ns.depth,
        width=ns.width if ns.width is not None else DEFAULT_WIDTH[ns.arch],
        act=ns.act,
        bn=ns.bn,
        residual=ns.residual,
        clip_norm=ns.clip_norm,
        clip_value=ns.clip_value,
        init=ns.init,
        optimizer=ns.optimizer,
        lr=ns.lr if ns.lr is not None else DEFAULT_LR[ns.optimizer],
        momentum=ns.momentum if ns.momentum is not None else DEFAULT_MOMENTUM,
        batch_size=ns.batch_size,
        steps=ns.steps,
        arch=ns.arch,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        download=ns.download,
        device=ns.device,
        seed=ns.seed,
        threads=ns.threads,
        every=ns.every,
        endpoint=ns.endpoint,
        relay=ns.relay,
        name=ns.name,
        quiet=ns.quiet,
        log_every=ns.log_every,
        record_dir=ns.record_dir,
        record=not ns.no_record,
    )


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse and validate ``argv`` (default ``sys.argv[1:]``).

    Raises:
        SystemExit: (code 2) unknown flags or unparsable values, after a one-line message.
        GradtuiError: (code 2) values or combinations that parse but make no sense.
    """
    return config_from_args(build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer``; returns the process exit code."""
    try:
        cfg = parse_config(argv)
        from trainer.loop import train  # torch: only once the flags are known to be good

        return train(cfg)
    except GradtuiError as exc:
        sys.stderr.write(f"trainer: error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:  # Ctrl-C before the loop installed its handlers (e.g. download)
        return 130
