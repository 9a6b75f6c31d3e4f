"""``Monitor``: per-layer gradient-flow statistics of a PyTorch model, published live."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gradtui.probe.hooks import Capture
from gradtui.probe.layers import Layout, discover
from gradtui.probe.stats import (
    DEFAULT_ACT_SAMPLE,
    Parts,
    act_parts,
    assemble,
    out_grad_parts,
    param_parts,
)
from gradtui.probe.table import StatsTable
from gradtui.probe.updates import DEFAULT_SAMPLE, UpdateTracker
from gradtui.protocol import (
    COLUMNS,
    MAX_CONFIG_ITEMS,
    MAX_TEXT_CHARS,
    ConfigValue,
    LayerInfo,
    end_status,
)

if TYPE_CHECKING:
    from gradtui.publish import Publisher

log = logging.getLogger("gradtui.probe")

DEFAULT_MARGIN = 0.01
"""Saturated: within 1% of the output range of a bound (sigmoid < 0.01 or > 0.99; |tanh| > 0.98)."""

Number = float | int | torch.Tensor


@dataclass(slots=True)
class _Entry:
    """A published step between ``Monitor.step`` and its host-side table."""

    step: int
    parts: Parts
    loss: float
    acc: float
    lr: float
    step_time: float
    throughput: float
    clipped: bool
    host: torch.Tensor | None = None
    event: Any = None
    snapshotted: bool = field(default=False)


def _scalar(value: Number | None) -> float:
    if value is None:
        return math.nan
    return float(value)


def _clean_config(config: Mapping[str, Any] | None) -> dict[str, ConfigValue]:
    out: dict[str, ConfigValue] = {}
    for key, value in list((config or {}).items())[:MAX_CONFIG_ITEMS]:
        if value is None or isinstance(value, bool | int | float):
            out[str(key)[:256]] = value
        else:
            # Paths, lists, enums...: shown by viewers, so their text form is what matters.
            out[str(key)[:256]] = str(value)[:MAX_TEXT_CHARS]
    return out


class Monitor:
    """Computes per-layer statistics at each ``step`` and publishes them (see docs/statistics.md).

    Call :meth:`step` once per training step, after ``loss.backward()`` and before
    ``optimizer.step()``. Statistics of step ``s`` are published when its update ratio is known:
    right after ``optimizer.step()`` when ``optimizer`` is given, else at the next ``step`` call
    (or :meth:`close`). On CUDA the host copy is read one call later still, never synchronously.

    Args:
        model: the model; rows are its parameter-owning and activation modules, in model order.
        name: human name of the run (default: the model's class name).
        config: run configuration shown by viewers; non-scalar values are sent as text.
        endpoint: where the publisher binds (None: its default endpoint).
        every: compute and publish every ``every``-th step (steps 0, every, 2*every...).
        publish: False opens nothing: statistics only, read through :attr:`last`.
        publisher: an already-open ``gradtui.publish.Publisher`` to use (closed by ``close``).
        optimizer: hooks its step for an exact across-the-step update ratio.
        saturation_margin: fraction of a saturating activation's output range counted as
            "near the bound".
        update_sample: elements per parameter tensor sampled for the update ratio (None: all).
        act_sample: elements per output sampled for act_mean/act_std/act_saturated (None: all;
            act_dead always reads every element).
        run: run id for the publisher (default: derived from ``name``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        every: int = 1,
        publish: bool = True,
        publisher: Publisher | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        saturation_margin: float = DEFAULT_MARGIN,
        update_sample: int | None = DEFAULT_SAMPLE,
        act_sample: int | None = DEFAULT_ACT_SAMPLE,
        run: str | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not 0.0 <= saturation_margin < 0.5:
            raise ValueError(f"saturation_margin must be in [0, 0.5), got {saturation_margin}")
        for label, value in (("update_sample", update_sample), ("act_sample", act_sample)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be >= 1 or None, got {value}")
        self._act_sample = act_sample
        self.every = every
        self.faults = 0
        """Internal errors caught so training could go on (each logged once per kind)."""
        self._warned: set[str] = set()
        self._layout: Layout = discover(model)
        first = next(iter(self._layout.params), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self._numel = np.array([p.numel() for p in self._layout.params], dtype=np.float64)
        self._geo: dict[bytes, tuple[Any, ...]] = {}
        self._margin = saturation_margin
        self._capture = Capture(self._layout, self._fault)
        self._updates = UpdateTracker(self._layout.params, update_sample)
        self._update_scale = np.asarray(self._updates.scale, dtype=np.float64)
        self._optimizer = optimizer
        self._opt_handles: list[Any] = []
        if optimizer is not None:
            self._opt_handles = [
                optimizer.register_step_pre_hook(self._before_opt_step),
                optimizer.register_step_post_hook(self._after_opt_step),
            ]
        self._step = 0
        self._open: _Entry | None = None
        self._inflight: deque[_Entry] = deque()
        self._last: StatsTable | None = None
        self._t_pub: float | None = None
        self._s_pub = 0
        self._closed = False
        self._names = tuple(r.info.name for r in self._layout.rows)
        self._publisher: Publisher | None = publisher
        if publisher is None and publish:
            from gradtui.publish import Publisher  # deferred: sockets only when publishing

            self._publisher = Publisher(
                name=name or type(model).__name__,
                layers=self.layers,
                columns=COLUMNS,
                config=_clean_config(config),
                endpoint=endpoint,
                run=run,
                device=str(self.device),
                torch_version=torch.__version__,
                every=every,
            )
        self._capture.arm()  # step 0 is published

    # ------------------------------------------------------------------ public API

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        """The published rows, in model order."""
        return self._layout.infos

    @property
    def endpoint(self) -> str | None:
        """Where the publisher is bound (None with ``publish=False``)."""
        return self._publisher.endpoint if self._publisher is not None else None

    @property
    def run(self) -> str | None:
        """The run id (None with ``publish=False``)."""
        return self._publisher.run if self._publisher is not None else None

    @property
    def last(self) -> StatsTable | None:
        """The latest completed step's statistics (None before the first completes)."""
        self._safely(self._drain, False)
        return self._last

    @property
    def dropped(self) -> int:
        """Steps the publisher dropped (full queue etc.); 0 without a publisher."""
        return self._publisher.dropped if self._publisher is not None else 0

    def step(
        self,
        loss: Number | None = None,
        *,
        acc: Number | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        clipped: bool = False,
    ) -> None:
        """Mark the end of one training step's backward pass. Never raises.

        Args:
            loss: the step's loss (a tensor is read on the device; no sync on unpublished steps).
            acc: batch accuracy, if known.
            lr: learning rate (default: the optimizer's first param group's).
            batch_size: samples in the step (default: leading dim of a watched output).
            clipped: the loop clipped this step's gradients.
        """
        if self._closed:
            return
        s = self._step
        self._step = s + 1
        try:
            if s % self.every:
                if self._open is not None:
                    self._finish_open(fallback=True, keep=False)
                if (s + 1) % self.every == 0:
                    self._capture.arm()
                return
            self._published_step(s, loss, acc, lr, batch_size, clipped)
        except Exception as exc:  # the training loop must never see our failures
            self._fault("step", exc)
            self._open = None
            with contextlib.suppress(Exception):
                self._capture.take()  # drop this step's captures (memory)

    def close(self, status: str = "finished", reason: str = "") -> None:
        """Publish what is pending, remove every hook and send the run's end. Idempotent.

        Args:
            status: ``finished``, ``interrupted`` or ``crashed``.
            reason: one line for viewers (e.g. the exception).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._open is not None:
                self._finish_open(fallback=True, keep=False)
            self._drain(True)
        except Exception as exc:
            self._fault("close", exc)
        self._capture.disarm()
        self._capture.take()
        for h in self._opt_handles:
            h.remove()
        self._opt_handles.clear()
        if self._publisher is not None:
            self._safely(self._publisher.close, status, reason)  # type: ignore[arg-type]

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(*end_status(exc))

    # ------------------------------------------------------------------ the step path

    def _published_step(
        self,
        s: int,
        loss: Number | None,
        acc: Number | None,
        lr: float | None,
        batch_size: int | None,
        clipped: bool,
    ) -> None:
        now = time.perf_counter()
        self._drain(False)
        if self._open is not None:
            # Fallback: weights now vs. at the previous published step = that step's update.
            self._finish_open(fallback=True, keep=True)
        if self.every > 1:
            self._capture.disarm()
        outs, grads, grad_rows = self._capture.take()
        device = self.device
        parts = Parts()
        with torch.no_grad():
            read = param_parts(self._layout, parts, device)
            if device.type == "cpu":
                parts.host_nonfinite = self._host_nonfinite(parts, read)
            out_grad_parts(grads, grad_rows, parts, device)
            act_parts(self._layout, outs, self._margin, parts, device, self._act_sample)
            loss_f = math.nan
            if isinstance(loss, torch.Tensor):
                parts.tensors.append(loss.detach().reshape(-1)[:1].float().to(device))
                parts.tensor_loss = True
            else:
                loss_f = _scalar(loss)
            acc_f = math.nan
            if isinstance(acc, torch.Tensor):
                parts.tensors.append(acc.detach().reshape(-1)[:1].float().to(device))
                parts.tensor_acc = True
            else:
                acc_f = _scalar(acc)
        step_time = math.nan
        if self._t_pub is not None and s > self._s_pub:
            step_time = (now - self._t_pub) / (s - self._s_pub)
        self._t_pub, self._s_pub = now, s
        if batch_size is None:
            batch_size = self._infer_batch(outs, grads)
        if lr is None and self._optimizer is not None:
            lr = float(self._optimizer.param_groups[0]["lr"])
        entry = _Entry(
            step=s,
            parts=parts,
            loss=loss_f,
            acc=acc_f,
            lr=math.nan if lr is None else float(lr),
            step_time=step_time,
            throughput=batch_size / step_time if batch_size and step_time > 0 else math.nan,
            clipped=bool(clipped),
        )
        self._open = entry
        if self._optimizer is None and not self._updates.has_snapshot:
            self._updates.snapshot()

    def _host_nonfinite(self, parts: Parts, grads: list[torch.Tensor]) -> Any:
        """On CPU the norms are already host values: count NaN/Inf only where a norm is not
        finite, which costs nothing on healthy steps."""
        gn = parts.tensors[0][: len(grads)].numpy()
        counts = np.zeros(len(grads), dtype=np.float64)
        for k in np.flatnonzero(~np.isfinite(gn)):
            g = grads[int(k)]
            g = g.coalesce().values() if g.is_sparse else g
            counts[k] = float((~torch.isfinite(g)).sum())
        return counts

    @staticmethod
    def _infer_batch(outs: list[list[torch.Tensor]], grads: list[torch.Tensor]) -> int | None:
        for ts in outs:
            if ts and ts[0].dim() >= 2:
                return int(ts[0].shape[0])
        for g in grads:
            if g.dim() >= 2:
                return int(g.shape[0])
        return None

    # ------------------------------------------------------------------ update ratio

    def _before_opt_step(self, *_: Any) -> None:
        try:
            if self._open is not None and not self._open.snapshotted:
                self._updates.snapshot()
                self._open.snapshotted = True
        except Exception as exc:
            self._fault("optimizer pre-hook", exc)

    def _after_opt_step(self, *_: Any) -> None:
        try:
            if self._open is not None and self._open.snapshotted:
                self._finish_open(fallback=False, keep=False)
                self._drain(False)
        except Exception as exc:
            self._open = None
            self._fault("optimizer post-hook", exc)

    def _finish_open(self, *, fallback: bool, keep: bool) -> None:
        """Attach the update of the open entry (if measurable) and start its host copy.

        Args:
            fallback: called from ``step``/``close`` rather than the optimizer's post-hook.
            keep: keep the current weights as the next published step's snapshot.
        """
        entry, self._open = self._open, None
        assert entry is not None
        update = None
        if self._optimizer is None or not fallback:
            update = self._updates.diff_sq(roll=keep and self._optimizer is None)
        else:
            self._updates.drop()  # optimizer given but its step never ran: no update to measure
        if update is not None:
            entry.parts.tensors.append(update.to(self.device))
            entry.parts.update_scale = self._update_scale
        self._launch(entry)

    # ------------------------------------------------------------------ host copy

    def _launch(self, entry: _Entry) -> None:
        vec = torch.cat(entry.parts.tensors) if entry.parts.tensors else torch.zeros(0)
        if vec.device.type == "cuda":
            # Non-blocking copy into pinned memory, read at a later call: no sync on this step.
            host = torch.empty(vec.shape, dtype=vec.dtype, pin_memory=True)
            host.copy_(vec, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
            entry.host, entry.event = host, event
        else:
            entry.host = vec.cpu()
        self._inflight.append(entry)
        if entry.event is None:
            self._drain(False)

    def _drain(self, block: bool) -> None:
        while self._inflight:
            entry = self._inflight[0]
            if entry.event is not None:
                if block:
                    entry.event.synchronize()
                elif not entry.event.query():
                    return
            self._inflight.popleft()
            self._finalize(entry)

    def _finalize(self, entry: _Entry) -> None:
        assert entry.host is not None
        # NaN/Inf are data here (exploding gradients), not numpy errors to warn about.
        with np.errstate(all="ignore"):
            table, total, loss, acc = assemble(
                self._layout, entry.parts, entry.host.numpy(), self._numel, self._geo
            )
        loss = loss if entry.parts.tensor_loss else entry.loss
        acc = acc if entry.parts.tensor_acc else entry.acc
        self._last = StatsTable(
            step=entry.step,
            rows=self._names,
            columns=COLUMNS,
            values=table,
            loss=loss,
            grad_norm=total,
        )
        if self._publisher is not None:
            self._publisher.publish_step(
                step=entry.step,
                loss=loss,
                stats=table,
                lr=entry.lr,
                step_time=entry.step_time,
                throughput=entry.throughput,
                clipped=entry.clipped,
                grad_norm=total,
                acc=acc,
            )

    # ------------------------------------------------------------------ faults

    def _fault(self, where: str, exc: BaseException) -> None:
        self.faults += 1
        if where not in self._warned:
            self._warned.add(where)
            log.warning(
                "gradtui probe: %s failed (%s: %s); training continues, further such faults "
                "are only counted",
                where,
                type(exc).__name__,
                exc,
            )

    def _safely(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._fault(getattr(fn, "__name__", "call"), exc)
