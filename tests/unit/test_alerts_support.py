"""Shared builders for the alert tests (no tests here): a real Fleet fed with hand-made steps."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gradtui.alerts import AlertConfig, AlertEngine
from gradtui.protocol import COLUMNS, Hello, LayerInfo, Step
from gradtui.state import Fleet, RunState

COL = {name: j for j, name in enumerate(COLUMNS)}


def mlp_layers(depth: int, act: str = "Sigmoid") -> tuple[LayerInfo, ...]:
    """``blocks.<i>.linear`` + ``blocks.<i>.act`` rows, then ``head``."""
    rows: list[LayerInfo] = []
    for i in range(depth):
        rows.append(LayerInfo(f"blocks.{i}.linear", "Linear", "param", (8, 8), 72))
        rows.append(LayerInfo(f"blocks.{i}.act", act, "act"))
    rows.append(LayerInfo("head", "Linear", "param", (10, 8), 90))
    return tuple(rows)


def healthy_matrix(layers: tuple[LayerInfo, ...]) -> npt.NDArray[np.float32]:
    """Stats a well-behaved run would publish: every rule's condition false."""
    out = np.full((len(layers), len(COLUMNS)), np.nan, np.float32)
    for i, li in enumerate(layers):
        if li.role == "param":
            out[i, COL["grad_rms"]] = 1e-2
            out[i, COL["grad_norm"]] = 1e-2 * math.sqrt(max(li.params, 1))
            out[i, COL["grad_max"]] = 4e-2
            out[i, COL["grad_nonfinite"]] = 0.0
            out[i, COL["weight_norm"]] = 1.0
            out[i, COL["update_ratio"]] = 1e-3
        else:
            out[i, COL["act_mean"]] = 0.3
            out[i, COL["act_std"]] = 0.5
            if li.kind in ("Sigmoid", "Tanh"):
                out[i, COL["act_saturated"]] = 0.05
            else:
                out[i, COL["act_dead"]] = 0.05
    return out


class Feed:
    """A run fed step by step into a real ``Fleet`` whose observer is an ``AlertEngine``."""

    def __init__(
        self,
        layers: tuple[LayerInfo, ...],
        config: AlertConfig | None = None,
        columns: tuple[str, ...] = COLUMNS,
    ) -> None:
        self.layers, self.columns = layers, columns
        self.fleet = Fleet(observer_factory=lambda: AlertEngine(config))
        self.seq = 0
        self.step_no = 0
        self._send(Hello(run="r", inc="a", seq=0, name="t", layers=layers, columns=columns))

    def _send(self, msg: Hello | Step) -> None:
        self.fleet.apply(msg, now=0.0)
        self.seq += 1

    @property
    def run(self) -> RunState:
        return self.fleet.runs["r"]

    @property
    def engine(self) -> AlertEngine:
        observer = self.run.observer
        assert isinstance(observer, AlertEngine)
        return observer

    def step(
        self,
        stats: npt.NDArray[np.float32],
        *,
        loss: float = 1.0,
        grad_norm: float = 1.0,
    ) -> None:
        self._send(
            Step(
                run="r",
                inc="a",
                seq=self.seq,
                step=self.step_no,
                loss=loss,
                stats=stats,
                grad_norm=grad_norm,
            )
        )
        self.step_no += 1

    def rules(self) -> list[str]:
        return [a.rule for a in self.engine.history]
