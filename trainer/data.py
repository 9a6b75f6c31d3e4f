"""Training batches: an offline synthetic task, or MNIST / Fashion-MNIST / CIFAR-10.

Real datasets are read (and with ``download=True`` fetched) by torchvision, then held as one
uint8 tensor on the device and batched by index: no per-sample PIL transforms, no workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gradtui.errors import GradtuiError
from trainer.cli import Dataset

Batch = tuple[torch.Tensor, torch.Tensor]

SYNTHETIC_SHAPE = (1, 28, 28)
SYNTHETIC_CLASSES = 10
# Per-pixel noise std relative to the class prototypes' unit std: hard enough that a broken
# network stays at chance, easy enough that a healthy one learns in a few hundred steps.
SYNTHETIC_NOISE = 3.0

# (torchvision class name, folder under --data-dir that holds its files, mean, std per channel)
_REAL: dict[str, tuple[str, str, tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", (0.2860,), (0.3530,)),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
}


@dataclass(frozen=True, slots=True)
class DataSpec:
    """Shape of what :func:`batches` yields."""

    in_shape: tuple[int, int, int]
    """``(channels, height, width)`` of one sample."""
    classes: int


class SyntheticTask:
    """Class prototypes plus Gaussian noise: learnable, MNIST-shaped, deterministic per seed.

    Every sample is ``(prototype[label] + noise * N(0, 1)) / sqrt(1 + noise**2)`` so inputs have
    unit variance, like normalised MNIST.
    """

    spec = DataSpec(SYNTHETIC_SHAPE, SYNTHETIC_CLASSES)

    def __init__(self, seed: int, noise: float = SYNTHETIC_NOISE) -> None:
        self._gen = torch.Generator().manual_seed(seed)
        self._prototypes = torch.randn(
            (SYNTHETIC_CLASSES, *SYNTHETIC_SHAPE), generator=self._gen, dtype=torch.float32
        )
        self._noise = noise
        self._scale = 1.0 / math.sqrt(1.0 + noise * noise)

    def batch(self, size: int) -> Batch:
        """One fresh batch on the CPU."""
        y = torch.randint(0, SYNTHETIC_CLASSES, (size,), generator=self._gen)
        noise = torch.randn((size, *SYNTHETIC_SHAPE), generator=self._gen)
        x = (self._prototypes[y] + self._noise * noise) * self._scale
        return x, y


def load_real(dataset: Dataset, root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All training images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``.

    Raises:
        GradtuiError: (code 2) the files are missing (naming the path and ``--download``) or the
            download failed.
    """
    # torchvision pulls in PIL and more; only real datasets need it.
    import torchvision.datasets as tvd

    cls_name, folder, _, _ = _REAL[dataset]
    where = Path(root).expanduser() / folder
    try:
        ds = getattr(tvd, cls_name)(
            root=str(Path(root).expanduser()), train=True, download=download
        )
    except (RuntimeError, OSError) as exc:  # torchvision: RuntimeError; urllib: URLError
        if not download and "not found" in str(exc).lower():
            raise GradtuiError(
                f"{dataset} not found under {where}; pass --download to fetch it", code=2
            ) from None
        doing = "download to" if download else "load from"
        raise GradtuiError(f"{dataset}: could not {doing} {where}: {_one_line(exc)}", 2) from None
    data = torch.as_tensor(ds.data)
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return images.contiguous(), labels


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def spec_for(dataset: Dataset) -> DataSpec:
    """Input shape and class count of ``dataset`` (without loading it)."""
    if dataset == "synthetic":
        return SyntheticTask.spec
    if dataset == "cifar10":
        return DataSpec((3, 32, 32), 10)
    return DataSpec((1, 28, 28), 10)


def batches(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    data_dir: str = "data",
    download: bool = False,
) -> Iterator[Batch]:
    """An endless stream of ``(x float32 [B, C, H, W], y int64 [B])`` batches on ``device``.

    Real datasets are reshuffled every epoch with a generator seeded by ``seed``; a last
    partial batch is dropped so BatchNorm never sees a batch of one.

    Raises:
        GradtuiError: (code 2, when the generator is created) as :func:`load_real`, or
            ``batch_size`` larger than the dataset.
    """
    if dataset == "synthetic":
        task = SyntheticTask(seed)

        def synthetic() -> Iterator[Batch]:
            while True:
                x, y = task.batch(batch_size)
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        return synthetic()

    images, labels = load_real(dataset, data_dir, download)
    if batch_size > len(labels):
        raise GradtuiError(f"--batch-size {batch_size} exceeds the {len(labels)} samples", 2)
    _, _, mean, std = _REAL[dataset]
    return _epochs(images, labels, mean, std, batch_size=batch_size, seed=seed, device=device)


def _epochs(
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> Iterator[Batch]:
    images, labels = images.to(device), labels.to(device)
    shift = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    scale = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(labels), generator=gen).to(device)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield (images[idx].float() - shift * 255.0) / scale, labels[idx]
