"""Progress output: one updating line on a terminal, a line every N steps otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

_TTY_REFRESH_S = 0.1  # fast enough to look live, slow enough not to cost the training loop


class Progress:
    """Prints the run's banner, progress and final line; silent when ``quiet``.

    The loop asks :meth:`due` every step (cheap: no device sync) and only then reads loss and
    accuracy from the device and calls :meth:`update`.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        log_every: int = 100,
        total: int = 0,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._quiet = quiet
        self._tty = self._out.isatty() if tty is None else tty
        self._log_every = log_every
        self._total = total
        self._last_t = time.monotonic()
        self._last_step = 0
        self._rate = math.nan
        self._open_line = False

    def banner(self, name: str, endpoint: str, run: str) -> None:
        """Where the run publishes and the exact command to watch it."""
        self._print(f"trainer: run {name!r} (id {run}) publishing on {endpoint}")
        self._print(f"trainer: watch it with: gradtui watch {endpoint}")

    def note(self, text: str) -> None:
        """One informational line (suppressed by ``--quiet``)."""
        self._print(f"trainer: {text}")

    def due(self, step: int) -> bool:
        """Whether :meth:`update` wants numbers for ``step`` (1-based count of steps done)."""
        if self._quiet:
            return False
        if self._tty:
            return time.monotonic() - self._last_t >= _TTY_REFRESH_S
        return step % self._log_every == 0

    def update(self, step: int, loss: float, acc: float) -> None:
        """Show progress after ``step`` steps."""
        if self._quiet:
            return
        now = time.monotonic()
        if now > self._last_t and step > self._last_step:
            self._rate = (step - self._last_step) / (now - self._last_t)
        self._last_t, self._last_step = now, step
        of_total = f"/{self._total}" if self._total else ""
        text = (
            f"step {step}{of_total}  loss {loss:.4f}  acc {acc * 100:5.1f}%  "
            f"{self._rate:.1f} steps/s"
        )
        if self._tty:
            self._out.write(f"\r{text}\x1b[K")
            self._out.flush()
            self._open_line = True
        else:
            self._print(text)

    def finish(self, status: str, step: int, reason: str = "") -> None:
        """The run's last line: its end status and step count."""
        why = f" ({reason})" if reason else ""
        self._print(f"trainer: {status} after {step} steps{why}")

    def _print(self, text: str) -> None:
        if self._quiet:
            return
        if self._open_line:
            self._out.write("\n")
            self._open_line = False
        self._out.write(text + "\n")
        self._out.flush()
