"""Forward hooks that capture module outputs and, after backward, dLoss/d(output), for one step.

Hooks are registered only while a published step's forward/backward runs (``arm``/``disarm``),
so unpublished steps pay nothing: no hook calls, and modules keep PyTorch's hook-free fast path.

Output gradients use ``retain_grad()`` (about 0.1 µs, in C++) rather than a Python tensor hook
(about 10 µs to register, plus a Python call in backward). A no-copy gradient hook for large
outputs was tried: what it saved in backward its registration cost in forward (no measurable
gain on a depth-20 width-256 MLP, CPU), and it would expose gradients that a custom backward
modifies in place. The catch of ``retain_grad``: if the output is later modified in place
(``nn.ReLU(inplace=True)`` after a ``Linear``), the retained gradient is that of the modified
tensor. The tensor's version counter tells; such a capture is discarded and the
row switches to a tensor hook registered before the modification, which sees the right gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from gradtui.probe.layers import Layout

MAX_CALLS = 16
"""Captures kept per row and step; bounds memory if a module runs many times (or in eval
forwards with gradients enabled) before the next ``Monitor.step``."""

FaultSink = Callable[[str, BaseException], None]
_Tensor = torch.Tensor


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, _Tensor):
        return output
    if isinstance(output, list | tuple):
        for item in output:
            if isinstance(item, _Tensor):
                return item
    return None


class Capture:
    """Collects, per row, the module outputs and their gradients."""

    def __init__(self, layout: Layout, on_fault: FaultSink) -> None:
        self._layout = layout
        self._on_fault = on_fault
        self._handles: list[RemovableHandle] = []
        self._kept: list[tuple[int, torch.Tensor, int]] = []
        """(row, output, version at capture) in call order."""
        self._hooked: list[tuple[int, torch.Tensor]] = []
        """(row, gradient) delivered by tensor hooks, for rows whose outputs change in place."""
        self._copies: list[tuple[int, torch.Tensor]] = []
        """(row, output copy) for activation rows whose outputs change in place."""
        self._inplace = [False] * len(layout.rows)
        self._calls = [0] * len(layout.rows)
        self._acts = [row.act for row in layout.rows]
        # Built once: arming every ``every`` steps then costs only the registrations.
        self._hooks = [(row.module, self._forward_hook(row.index, row.act)) for row in layout.rows]

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        """Register the forward hooks (idempotent)."""
        if self._handles:
            return
        self._handles = [m.register_forward_hook(hook) for m, hook in self._hooks]

    def disarm(self) -> None:
        """Remove the forward hooks; what they captured stays until :meth:`take`."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def take(self) -> tuple[list[list[torch.Tensor]], list[torch.Tensor], list[int]]:
        """Return and forget everything captured since the last ``take``.

        Returns:
            ``(outs, grads, grad_rows)``: per row, the outputs of activation rows; the output
            gradients in capture order, with the row of each.
        """
        kept, hooked, copies = self._kept, self._hooked, self._copies
        self._kept, self._hooked, self._copies = [], [], []
        self._calls = [0] * len(self._layout.rows)
        acts = self._acts
        outs: list[list[torch.Tensor]] = [[] for _ in acts]
        grads: list[torch.Tensor] = []
        grad_rows: list[int] = []
        for index, t, version in kept:
            if t._version != version:
                # Modified in place after the module returned: neither its values nor its
                # retained gradient are the module's. From now on this row copies/hooks.
                self._inplace[index] = True
                continue
            if acts[index]:
                outs[index].append(t.detach())
            g = t.grad
            if g is not None:
                grads.append(g)
                grad_rows.append(index)
        for index, c in copies:
            outs[index].append(c)
        for index, g in hooked:
            grads.append(g)
            grad_rows.append(index)
        return outs, grads, grad_rows

    def _forward_hook(self, index: int, act: bool) -> Callable[[torch.nn.Module, Any, Any], None]:
        def on_grad(g: torch.Tensor) -> None:
            try:
                self._hooked.append((index, g))
            except Exception as exc:  # never raise inside autograd
                self._on_fault("grad hook", exc)

        def on_forward(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            try:
                # No-grad forwards are evaluation: they must not pollute training stats.
                if not torch.is_grad_enabled():
                    return
                t = _first_tensor(output)
                if t is None or self._calls[index] >= MAX_CALLS:
                    return
                self._calls[index] += 1
                if self._inplace[index]:
                    if act:
                        self._copies.append((index, t.detach().clone()))
                    if t.requires_grad:
                        t.register_hook(on_grad)  # type: ignore[no-untyped-call]
                    return
                self._kept.append((index, t, t._version))
                if t.requires_grad:
                    t.retain_grad()
            except Exception as exc:  # never raise into the user's forward
                self._on_fault("forward hook", exc)

        return on_forward
