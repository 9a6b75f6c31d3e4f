"""Deterministic fake telemetry: feeds the viewer, tests and benchmarks without torch.

The numbers follow the physics of backpropagation closely enough to exercise the dashboard
and the alert rules: in ``vanishing`` mode the gradient RMS shrinks by ~x0.25 per layer
toward the input (sigmoid's derivative is at most 0.25) and sigmoid outputs sit near their
bounds; ``healthy`` keeps every layer within 10x of the others; ``exploding`` grows the total
norm geometrically with the step; ``nan`` is healthy until ``nan_after`` and then non-finite.

Every value is a pure function of ``(seed, step)``: any step can be regenerated on its own.
"""

from __future__ import annotations

import math
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from gradtui.protocol import COLUMNS, LayerInfo, Matrix

_F64: TypeAlias = npt.NDArray[np.float64]
Mode: TypeAlias = Literal["vanishing", "healthy", "exploding", "nan"]
MODES: Final[tuple[Mode, ...]] = ("vanishing", "healthy", "exploding", "nan")

_ACT_KINDS: Final = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "gelu": "GELU"}
_COL: Final = {name: i for i, name in enumerate(COLUMNS)}
_BASE_RMS: Final = 1e-2  # grad RMS of the output layer in a well-behaved MLP
_VANISH_FACTOR: Final = 0.25  # sigmoid'(x) <= 0.25: one such factor per layer
_EXPLODE_PER_STEP: Final = 1.02  # total norm growth per step in ``exploding``
_EXPLODE_PER_LAYER: Final = 1.5  # growth toward the input in ``exploding``


def _growth(step: int) -> float:
    # Capped so the float64 power never overflows; float32 turns it into inf later anyway.
    return float(_EXPLODE_PER_STEP ** min(max(step, 0), 30_000))


def synthetic_layers(depth: int, act: str = "sigmoid", *, width: int = 64) -> tuple[LayerInfo, ...]:
    """Rows of a ``depth``-block MLP: ``layers.<i>.linear`` then ``layers.<i>.act``, input first.

    Args:
        depth: number of Linear+activation blocks (>= 1).
        act: activation name (``sigmoid``, ``tanh``, ``relu``, ``gelu``).
        width: hidden width; sets the Linear shapes and parameter counts.
    """
    if depth < 1 or width < 1:
        raise ValueError("depth and width must be >= 1")
    act_kind = _ACT_KINDS.get(act.lower(), act.capitalize())
    rows: list[LayerInfo] = []
    for i in range(depth):
        rows.append(
            LayerInfo(
                name=f"layers.{i}.linear",
                kind="Linear",
                role="param",
                shape=(width, width),
                params=width * width + width,
            )
        )
        rows.append(LayerInfo(name=f"layers.{i}.act", kind=act_kind, role="act"))
    return tuple(rows)


class SyntheticRun:
    """A fake run over ``layers``; ``stats(step)`` is ``float32[len(layers), len(COLUMNS)]``."""

    def __init__(
        self,
        layers: tuple[LayerInfo, ...] | list[LayerInfo],
        *,
        mode: Mode = "vanishing",
        seed: int = 0,
        nan_after: int = 100,
        lr: float = 0.1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.layers = tuple(layers)
        self.mode: Mode = mode
        self.seed = seed
        self.nan_after = nan_after
        """First step at which ``nan`` mode turns non-finite."""
        self.lr = lr
        self._param_rows = [i for i, li in enumerate(self.layers) if li.role == "param"]
        self._act_rows = [i for i, li in enumerate(self.layers) if li.role == "act"]
        fixed = np.random.default_rng(abs(seed))
        # Per-layer constant scatter, so layers differ but stay put from step to step.
        self._layer_jitter = 10.0 ** fixed.uniform(-0.35, 0.35, size=len(self.layers))

    # ----------------------------------------------------------------- per-step values

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([abs(self.seed), max(step, 0)])

    def _grad_rms(self, step: int, noise: _F64) -> _F64:
        """Gradient RMS per param row (index = param depth, 0 = input side)."""
        n = len(self._param_rows)
        depth_from_out = np.arange(n)[::-1].astype(np.float64)  # 0 at the output layer
        jitter: _F64 = self._layer_jitter[self._param_rows] * noise
        if self.mode in ("vanishing", "exploding"):
            # Keep the per-layer factor recognisable (~x0.25): only a quarter of the scatter.
            jitter = self._layer_jitter[self._param_rows] ** 0.25 * noise
        if self.mode == "vanishing":
            return _BASE_RMS * _VANISH_FACTOR**depth_from_out * jitter
        if self.mode == "exploding":
            return _BASE_RMS * _growth(step) * _EXPLODE_PER_LAYER**depth_from_out * jitter
        return _BASE_RMS * jitter  # healthy, and nan before it breaks

    def _broken(self, step: int) -> bool:
        return self.mode == "nan" and step >= self.nan_after

    def stats(self, step: int) -> Matrix:
        """The stats matrix for ``step``; NaN where a column does not apply to the row."""
        rng = self._rng(step)
        out = np.full((len(self.layers), len(COLUMNS)), np.nan, dtype=np.float64)
        # Bounded multiplicative noise keeps ``healthy`` within 10x across layers.
        noise = np.exp(np.clip(rng.normal(0.0, 0.05, size=len(self.layers)), -0.1, 0.1))

        rms = self._grad_rms(step, noise[self._param_rows])
        for k, row in enumerate(self._param_rows):
            params = max(self.layers[row].params, 1)
            shape = self.layers[row].shape
            fan_out = shape[0] if shape else int(math.sqrt(params))
            weight_norm = 0.05 * math.sqrt(params) * (1.0 + 1e-4 * step)
            g = float(rms[k])
            out[row, _COL["grad_rms"]] = g
            out[row, _COL["grad_norm"]] = g * math.sqrt(params)
            out[row, _COL["grad_max"]] = g * 4.0 * noise[row]
            out[row, _COL["grad_nonfinite"]] = 0.0
            out[row, _COL["out_grad_norm"]] = g * math.sqrt(fan_out) * 2.0
            out[row, _COL["weight_norm"]] = weight_norm
            out[row, _COL["update_ratio"]] = self.lr * g * math.sqrt(params) / weight_norm
            if self._broken(step):
                out[row, _COL["grad_nonfinite"]] = float(params)
                for col in ("grad_norm", "grad_rms", "grad_max", "out_grad_norm", "update_ratio"):
                    out[row, _COL[col]] = np.nan
                out[row, _COL["grad_max"]] = np.inf

        sat = self.mode == "vanishing"
        for row in self._act_rows:
            kind = self.layers[row].kind
            u = float(rng.uniform(0.0, 1.0))
            if kind in ("Sigmoid", "Tanh"):
                saturated = 0.7 + 0.2 * u if sat else 0.02 + 0.03 * u
                out[row, _COL["act_saturated"]] = saturated
                lo = 0.0 if kind == "Sigmoid" else -1.0
                out[row, _COL["act_mean"]] = lo + (1.0 - lo) * (0.5 + 0.05 * (u - 0.5))
                out[row, _COL["act_std"]] = (1.0 - lo) * (0.45 if sat else 0.2)
            else:
                out[row, _COL["act_dead"]] = 0.02 + 0.05 * u
                out[row, _COL["act_mean"]] = 0.3 + 0.1 * u
                out[row, _COL["act_std"]] = 0.5 + 0.1 * u
            # The back-propagated signal at the activation's output: follow the previous
            # param row's scale (the Linear feeding it).
            prev = [p for p in self._param_rows if p < row]
            scale = out[prev[-1], _COL["out_grad_norm"]] if prev else _BASE_RMS
            out[row, _COL["out_grad_norm"]] = scale * 1.1
            if self._broken(step):
                out[row, _COL["act_mean"]] = np.nan
                out[row, _COL["act_std"]] = np.nan
        with np.errstate(over="ignore", invalid="ignore"):
            return out.astype(np.float32)

    def grad_norm(self, step: int) -> float:
        """Total gradient L2 norm over all parameters (``inf`` once non-finite)."""
        norms = self.stats(step)[self._param_rows, _COL["grad_norm"]].astype(np.float64)
        if not np.all(np.isfinite(norms)):
            return math.inf
        with np.errstate(over="ignore"):
            return float(np.sqrt(np.sum(norms * norms)))

    def loss(self, step: int) -> float:
        """Training loss for ``step``: falls when healthy, stalls when vanishing, diverges after."""
        step = max(step, 0)
        noise = float(self._rng(step).normal(0.0, 0.01))
        start = math.log(10.0)  # cross-entropy of a uniform guess over 10 classes
        if self.mode == "vanishing":
            return start - 0.05 * (1.0 - math.exp(-step / 500.0)) + noise
        if self.mode == "exploding":
            return min(start * (0.8 + 0.2 * _growth(step)) + noise, 1e30)
        if self._broken(step):
            return math.nan
        return 0.1 + (start - 0.1) * math.exp(-step / 200.0) + noise
