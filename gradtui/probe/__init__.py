"""The probe: per-layer gradient-flow statistics of a PyTorch model (the only torch importer).

Usage::

    with Monitor(model, name="my-run", optimizer=opt) as mon:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            mon.step(loss)  # after backward, before the optimizer step
            opt.step()
"""

from __future__ import annotations

from gradtui.probe.monitor import DEFAULT_MARGIN, Monitor
from gradtui.probe.stats import DEFAULT_ACT_SAMPLE
from gradtui.probe.table import StatsTable
from gradtui.probe.updates import DEFAULT_SAMPLE

__all__ = ["DEFAULT_ACT_SAMPLE", "DEFAULT_MARGIN", "DEFAULT_SAMPLE", "Monitor", "StatsTable"]
