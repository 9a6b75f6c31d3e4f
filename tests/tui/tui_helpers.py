"""Helpers for dashboard tests: fixed fleets, a frozen clock, bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from gradtui.alerts import AlertEngine
from gradtui.protocol import Hello, Step
from gradtui.state import Fleet, LivenessPolicy
from gradtui.synthetic import Mode, SyntheticRun, synthetic_layers

T0 = 1_700_000_000.0
"""Frozen wall clock for deterministic fleets (liveness, snapshots)."""


def fill_run(
    fleet: Fleet,
    run: str,
    mode: Mode,
    *,
    depth: int = 8,
    steps: int = 60,
    name: str | None = None,
    t0: float = T0,
    nan_after: int = 40,
) -> None:
    """Apply a hello and ``steps`` synthetic steps to ``fleet`` (no sockets, fixed times)."""
    layers = synthetic_layers(depth)
    syn = SyntheticRun(layers, mode=mode, seed=7, nan_after=nan_after)
    hello = Hello(run=run, inc="i1", seq=0, t=t0, name=name or run, layers=layers)
    fleet.apply(hello, t0, "tcp://127.0.0.1:1")
    for s in range(steps):
        t = t0 + 0.01 * (s + 1)
        msg = Step(
            run=run,
            inc="i1",
            seq=s + 1,
            t=t,
            step=s,
            loss=syn.loss(s),
            stats=syn.stats(s),
            grad_norm=syn.grad_norm(s),
        )
        fleet.apply(msg, t, "tcp://127.0.0.1:1")


def fixed_fleet() -> Fleet:
    """Two runs with alerts: a vanishing sigmoid MLP and one that turns NaN at step 40."""
    fleet = Fleet(observer_factory=AlertEngine, policy=LivenessPolicy())
    fill_run(fleet, "sigmoid-deep", "vanishing")
    fill_run(fleet, "nan-run", "nan")
    return fleet


def frozen_clock() -> Callable[[], float]:
    return lambda: T0 + 1.0


async def wait_until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``cond()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)
