"""The training loop: model, data, optimiser, clipping, the probe and clean shutdown.

Order inside a step: forward, backward, decide ``clipped`` from the raw gradients, hand the raw
gradients to the probe (``Monitor.step``), then clip, then ``optimizer.step()``. The probe thus
shows what backpropagation produced, and the update ratio it measures includes the clipping.

End of a run:
- ``--steps`` reached: end status ``finished``, exit code 0;
- Ctrl-C or SIGTERM: the current step completes, end status ``interrupted``, exit code 0
  (a second signal aborts at once, exit code 130);
- non-finite loss: the run stops with a one-line message, end status ``crashed``, exit code 1.
  It is checked on every step that is published (``--every``) or printed, so it stops at most
  ``--every`` steps late without forcing a device sync on every step.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from gradtui.errors import GradtuiError

if TYPE_CHECKING:
    from gradtui.publish import Publisher
    from gradtui.storage import RunRecorder
from trainer.cli import Device, TrainConfig
from trainer.console import Progress
from trainer.data import batches, spec_for
from trainer.model import build_model


def resolve_device(choice: Device) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable explicit choice is an error.

    Raises:
        GradtuiError: (code 2) ``cuda`` or ``mps`` asked for but not available.
    """
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if choice == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (choice == "cuda" and not cuda) or (choice == "mps" and not mps):
        raise GradtuiError(f"--device {choice} is not available here; use --device cpu", code=2)
    return torch.device(choice)


def cpu_threads(requested: int) -> int:
    """Torch CPU threads: ``requested`` if positive, else ``$OMP_NUM_THREADS`` if set, else half
    the cores, at most 4.

    Measured on a loaded 2-core box: two threads per trainer ran 25x slower than one (OpenMP
    workers spinning against each other and the publisher thread), so the default leaves room.
    """
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with ``cfg.momentum``) or Adam at ``cfg.lr``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


class Clipper:
    """Gradient clipping split in two so the probe sees the raw gradients in between.

    :meth:`check` measures and returns the ``clipped`` flag; :meth:`apply` then clips.
    """

    def __init__(self, params: list[nn.Parameter], cfg: TrainConfig) -> None:
        self._params = params
        self._norm = cfg.clip_norm
        self._value = cfg.clip_value
        self._total: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self._norm is not None or self._value is not None

    def check(self) -> bool:
        """Whether clipping will change the current gradients (one device sync when active)."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return False
        if self._norm is not None:
            self._total = torch.nn.utils.get_total_norm(grads)
            return bool(self._total > self._norm)
        if self._value is not None:
            peak = torch.stack(torch._foreach_norm(grads, ord=math.inf)).max()
            return bool(peak > self._value)
        return False

    def apply(self) -> None:
        """Clip in place (reusing the norm :meth:`check` measured)."""
        if self._norm is not None and self._total is not None:
            torch.nn.utils.clip_grads_with_norm_(self._params, self._norm, self._total)
        elif self._value is not None:
            torch.nn.utils.clip_grad_value_(self._params, self._value)


class StopSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"

    def __enter__(self) -> StopSignal:
        # Handlers can only be installed from the main thread (tests may run us elsewhere).
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def train(cfg: TrainConfig) -> int:
    """Run training as configured; returns the process exit code (see the module docstring).

    Raises:
        GradtuiError: (code 2) unavailable device, missing dataset.
    """
    # Imported here so a broken or missing probe never blocks `--help`.
    from gradtui.probe import Monitor

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cpu_threads(cfg.threads))
    device = resolve_device(cfg.device)
    spec = spec_for(cfg.dataset)
    data = batches(
        cfg.dataset,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        data_dir=cfg.data_dir,
        download=cfg.download,
    )
    model = build_model(
        arch=cfg.arch,
        in_shape=spec.in_shape,
        classes=spec.classes,
        depth=cfg.depth,
        width=cfg.width,
        act=cfg.act,
        bn=cfg.bn,
        residual=cfg.residual,
        init=cfg.init,
    ).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg)
    clipper = Clipper(params, cfg)
    progress = Progress(quiet=cfg.quiet, log_every=cfg.log_every, total=cfg.steps)

    recorder = _recorder(cfg)
    mon = Monitor(
        model,
        name=cfg.run_name(),
        config=cfg.as_dict(),
        every=cfg.every,
        optimizer=opt,
        publisher=_publisher(model, cfg, device, recorder),
    )
    status, reason, done, code = "crashed", "exception", 0, 1
    try:
        progress.banner(cfg.run_name(), mon.endpoint or "(not published)", mon.run or "-")
        if recorder is not None:
            progress.note(f"recording to {recorder.target} (--no-record to skip)")
        with StopSignal() as stop:
            while cfg.steps == 0 or done < cfg.steps:
                if stop.reason is not None:
                    status, reason, code = "interrupted", stop.reason, 0
                    break
                x, y = next(data)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                clipped = clipper.check() if clipper.active else False
                acc = (logits.detach().argmax(dim=1) == y).float().mean()
                mon.step(
                    loss.detach(),
                    acc=acc,
                    lr=opt.param_groups[0]["lr"],
                    batch_size=cfg.batch_size,
                    clipped=clipped,
                )
                clipper.apply()
                opt.step()
                done += 1
                shown = progress.due(done)
                if shown or done % cfg.every == 0:
                    loss_value = float(loss.item())
                    if not math.isfinite(loss_value):
                        status, code = "crashed", 1
                        # Step numbers are 0-based on the wire; name the one viewers show.
                        reason = f"non-finite loss ({loss_value}) at step {done - 1}"
                        sys.stderr.write(
                            f"trainer: {reason}; stopping (try a lower --lr or --clip-norm)\n"
                        )
                        break
                    if shown:
                        progress.update(done, loss_value, float(acc.item()))
            else:
                status, reason, code = "finished", "", 0
    except KeyboardInterrupt:
        status, reason, code = "interrupted", "aborted by a second signal", 130
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise
    finally:
        mon.close(status=status, reason=reason)  # the End message reaches the recorder first
        if recorder is not None and not recorder.close(timeout=10.0):
            sys.stderr.write("trainer: recording did not finish writing in 10 s\n")
        progress.finish(status, done, reason)
    return code


def _recorder(cfg: TrainConfig) -> RunRecorder | None:
    """The run's SQLite recorder (a publisher sink: it writes off the training thread)."""
    if not cfg.record:
        return None
    from gradtui.storage import RunRecorder, default_directory

    return RunRecorder(cfg.record_dir or default_directory())


def _publisher(
    model: nn.Module, cfg: TrainConfig, device: torch.device, recorder: RunRecorder | None
) -> Publisher:
    """The run's publisher, built here so the recorder can be plugged in as a sink."""
    from gradtui.probe.layers import discover
    from gradtui.publish import Publisher

    try:
        return Publisher(
            name=cfg.run_name(),
            layers=discover(model).infos,
            config=cfg.as_dict(),
            endpoint=cfg.endpoint,
            device=str(device),
            torch_version=torch.__version__,
            every=cfg.every,
            sinks=[recorder] if recorder is not None else [],
            relay=cfg.relay,
        )
    except BaseException:
        if recorder is not None:
            recorder.close()
        raise
