"""The training loop's parts: clipping flag, devices, threads, signals, a tiny in-process run."""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gradtui.errors import GradtuiError
from trainer.cli import parse_config
from trainer.loop import Clipper, StopSignal, cpu_threads, resolve_device, train


def _params_with_grads(*grads: list[float]) -> list[nn.Parameter]:
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g)
        params.append(p)
    return params


def test_clip_norm_flags_only_when_the_total_norm_exceeds() -> None:
    """Guards the clipped flag: set iff the raw total norm is above --clip-norm, then clipped."""
    params = _params_with_grads([3.0, 0.0], [0.0, 4.0])  # total norm 5
    cfg = parse_config(["--clip-norm", "5.5"])
    assert Clipper(params, cfg).check() is False
    clipper = Clipper(params, parse_config(["--clip-norm", "1"]))
    assert clipper.check() is True
    assert params[0].grad is not None and float(params[0].grad[0]) == 3.0  # raw until apply
    clipper.apply()
    total = torch.linalg.vector_norm(torch.cat([p.grad for p in params if p.grad is not None]))
    assert float(total) == pytest.approx(1.0, rel=1e-4)


def test_clip_value_flags_any_entry_beyond_the_bound() -> None:
    """Guards --clip-value: flagged iff some |g| exceeds it; entries end up within bounds."""
    params = _params_with_grads([0.5, -2.0], [0.1])
    assert Clipper(params, parse_config(["--clip-value", "2.5"])).check() is False
    clipper = Clipper(params, parse_config(["--clip-value", "1"]))
    assert clipper.check() is True
    clipper.apply()
    assert params[0].grad is not None and params[0].grad.tolist() == [0.5, -1.0]
    assert not Clipper(params, parse_config([])).active


def test_unavailable_device_is_a_code_2_error() -> None:
    """Guards --device cuda/mps on a machine without them: a one-line error, not a crash."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(GradtuiError, match="--device cuda is not available") as info:
            resolve_device("cuda")
        assert info.value.code == 2


def test_cpu_threads_prefers_flag_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the thread default that keeps several trainers on one CPU from thrashing."""
    assert cpu_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(0) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= cpu_threads(0) <= 4


def test_first_signal_asks_to_stop_and_handlers_are_restored() -> None:
    """Guards Ctrl-C/SIGTERM: the first only sets a flag (the step completes), then restore."""
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal aborts
    assert signal.getsignal(signal.SIGTERM) is before


def _fake_mnist(root: Path) -> None:
    """A 32-sample MNIST in the real IDX format where torchvision looks (<root>/MNIST/raw)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(32, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x0803, 32, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x0801, 32) + (np.arange(32) % 10).astype(np.uint8).tobytes()
        )


TINY = "--depth 2 --width 8 --batch-size 8 --steps 6 --threads 1 --log-every 3"


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ("--act tanh --bn --residual --clip-norm 0.5", "mlp-d2-tanh+bn+res+clip0.5"),
        ("--arch cnn --act relu --bn --clip-value 0.1", "cnn-d2-relu+bn+clipv0.1"),
        ("--dataset mnist --act gelu --optimizer adam", "mlp-d2-gelu"),
    ],
)
def test_tiny_run_trains_in_process(
    extra: str,
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Guards the whole loop with the real probe (MLP, CNN, an MNIST-format dataset, both
    clipping modes, Adam): a short run prints its banner and progress and exits 0."""
    monkeypatch.setenv("GRADTUI_RUNTIME_DIR", str(tmp_path / "run"))
    _fake_mnist(tmp_path)
    argv = [*TINY.split(" "), *extra.split(" "), "--data-dir", str(tmp_path)]
    rec_dir = tmp_path / "rec"
    cfg = parse_config([*argv, "--endpoint", "tcp://127.0.0.1:*", "--record-dir", str(rec_dir)])
    before = torch.get_num_threads()
    try:
        assert train(cfg) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"trainer: run '{name}'")
    assert out[2] == f"trainer: recording to {rec_dir} (--no-record to skip)"
    assert out[3].startswith("step 3/6") and out[4].startswith("step 6/6")
    assert out[-1] == "trainer: finished after 6 steps"
    from gradtui.storage import open_recording

    with open_recording(rec_dir) as recording:  # the run was recorded, End included
        (run,) = recording.runs
        assert run.steps == 6 and run.end is not None and run.end.status == "finished"
