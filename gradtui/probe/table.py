"""The host-side result of one published step: what ``Monitor.last`` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class StatsTable:
    """One step's ``[rows, columns]`` statistics, rows in model order."""

    step: int
    rows: tuple[str, ...]
    """Layer names (module paths), the published row order."""
    columns: tuple[str, ...]
    values: npt.NDArray[np.float32]
    """``float32[len(rows), len(columns)]``; NaN where a column does not apply to a row."""
    loss: float = math.nan
    grad_norm: float = math.nan
    """Total gradient L2 norm over all parameters, as read at ``Monitor.step``."""

    def get(self, layer: str, column: str) -> float:
        """The value at (layer, column).

        Raises:
            KeyError: unknown layer or column.
        """
        try:
            r = self.rows.index(layer)
            c = self.columns.index(column)
        except ValueError:
            raise KeyError(f"{layer!r}/{column!r}") from None
        return float(self.values[r, c])

    def column(self, column: str) -> npt.NDArray[np.float32]:
        """One column over all rows (a view)."""
        return self.values[:, self.columns.index(column)]
