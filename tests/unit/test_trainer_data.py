"""Trainer data: the synthetic task, and real MNIST-format files through torchvision's loader."""

from __future__ import annotations

import struct
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradtui.errors import GradtuiError
from trainer.data import SyntheticTask, batches, spec_for

CPU = torch.device("cpu")


def test_synthetic_is_mnist_shaped_and_deterministic_per_seed() -> None:
    """Guards --seed reproducibility and the 1x28x28 / 10-class shape of the default task."""
    a = list(islice(batches("synthetic", batch_size=8, seed=3, device=CPU), 3))
    b = list(islice(batches("synthetic", batch_size=8, seed=3, device=CPU), 3))
    c = next(batches("synthetic", batch_size=8, seed=4, device=CPU))
    assert a[0][0].shape == (8, 1, 28, 28) and a[0][0].dtype == torch.float32
    assert a[0][1].dtype == torch.int64 and int(a[0][1].min()) >= 0 and int(a[0][1].max()) < 10
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], c[0])
    assert not torch.equal(a[0][0], a[1][0])  # a stream, not one batch repeated
    assert spec_for("synthetic").in_shape == (1, 28, 28)


def test_synthetic_inputs_are_normalised() -> None:
    """Guards the input scale (unit variance, like normalised MNIST) the init schemes assume."""
    x, _ = SyntheticTask(seed=0).batch(512)
    assert abs(float(x.mean())) < 0.1
    assert float(x.std()) == pytest.approx(1.0, abs=0.1)


def test_synthetic_is_learnable() -> None:
    """Guards a task that is pure noise: a linear model must beat chance by far in 100 steps."""
    torch.manual_seed(0)
    task = SyntheticTask(seed=0)
    model = torch.nn.Linear(784, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        x, y = task.batch(64)
        loss = F.cross_entropy(model(x.flatten(1)), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    x, y = task.batch(512)
    acc = float((model(x.flatten(1)).argmax(1) == y).float().mean())
    assert acc > 0.8


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's IDX format: big-endian magic (0x0803 images / 0x0801 labels), dims, uint8 data."""
    n, rows, cols = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x0803, n, rows, cols) + images.astype(np.uint8).tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes()
    )


def _fake_mnist(root: Path, folder: str, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    _write_idx(raw, "train", images, labels)
    _write_idx(raw, "t10k", images[:10], labels[:10])
    return images, labels


@pytest.mark.parametrize(
    ("dataset", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_real_idx_files_load_through_torchvision(tmp_path: Path, dataset: str, folder: str) -> None:
    """Guards the real-dataset path: torchvision reads the files and batches are normalised."""
    images, labels = _fake_mnist(tmp_path, folder)
    stream = batches(dataset, batch_size=16, seed=0, device=CPU, data_dir=str(tmp_path))  # type: ignore[arg-type]
    epoch = list(islice(stream, 2))  # 40 samples / 16 = 2 full batches; the rest is dropped
    x, y = epoch[0]
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)
    # Every sample must be an exact, normalised copy of one of the files' images.
    mean, std = (0.1307, 0.3081) if dataset == "mnist" else (0.2860, 0.3530)
    restored = torch.round((x * std + mean) * 255).to(torch.uint8).numpy()
    flat = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    for img, lab in zip(restored, y.tolist(), strict=True):
        assert flat[img[0].tobytes()] == lab


def test_real_batches_reshuffle_each_epoch(tmp_path: Path) -> None:
    """Guards epoch handling: the stream is endless and each epoch has a fresh order."""
    _fake_mnist(tmp_path, "MNIST", n=40)
    stream = batches("mnist", batch_size=40, seed=1, device=CPU, data_dir=str(tmp_path))
    (_, y1), (_, y2) = islice(stream, 2)
    assert sorted(y1.tolist()) == sorted(y2.tolist())
    assert not torch.equal(y1, y2)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_dataset_is_one_line_naming_path_and_download(tmp_path: Path, dataset: str) -> None:
    """Guards the offline failure: one line with the path and --download, exit code 2."""
    with pytest.raises(GradtuiError) as info:
        batches(dataset, batch_size=4, seed=0, device=CPU, data_dir=str(tmp_path))  # type: ignore[arg-type]
    message = str(info.value)
    assert info.value.code == 2 and "\n" not in message
    assert str(tmp_path) in message and "--download" in message


def test_batch_larger_than_dataset_is_an_error(tmp_path: Path) -> None:
    """Guards an endless loop yielding nothing when --batch-size exceeds the dataset."""
    _fake_mnist(tmp_path, "MNIST", n=20)
    with pytest.raises(GradtuiError, match="--batch-size"):
        batches("mnist", batch_size=64, seed=0, device=CPU, data_dir=str(tmp_path))
