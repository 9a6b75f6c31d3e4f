"""One card per compared run: status, step, loss/accuracy, the flags that differ, active alerts.

The differing flags are what explains the pictures above (``act: sigmoid`` vs ``act: relu``),
so they are highlighted; flags every run shares are left out. All wire text is plain ``Text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from gradtui.tui.text import num, plain
from gradtui.tui.widgets.compare_data import CompareRun, fmt_config_value
from gradtui.tui.widgets.compare_plots import rich_colour

STATUS_STYLE: Final = {
    "live": "green",
    "idle": "yellow",
    "waiting": "dim",
    "stale": "bold red",
    "finished": "blue",
    "interrupted": "yellow",
    "crashed": "bold red",
}
SEVERITY_STYLE: Final = {"critical": "bold red", "warning": "yellow"}
MAX_ALERT_LINES: Final = 3


def render_card(run: CompareRun, slot: int, diff_keys: Sequence[str]) -> Text:
    """The card's text: pure, so tests check it without a terminal."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("■ ", style=rich_colour(slot))
    out.append_text(plain(run.name, style="bold", limit=40))
    out.append("\n")
    out.append(run.status, style=STATUS_STYLE.get(run.status, ""))
    out.append(f"  step {run.step:,}" if run.step >= 0 else "  no steps yet", style="dim")
    out.append("\nloss ")
    out.append_text(num(run.loss))
    out.append("  acc ")
    out.append_text(num(run.acc))
    if run.nonfinite:
        out.append(f"\n{run.nonfinite:,} non-finite grads", style="bold magenta")
    for key in diff_keys:
        out.append("\n")
        out.append_text(plain(f"{key}: ", style="dim", limit=24))
        value = run.config.get(key)
        out.append_text(plain(fmt_config_value(value), style="bold yellow", limit=24))
    if run.alerts:
        for alert in run.alerts[:MAX_ALERT_LINES]:
            out.append("\n")
            out.append("▲ ", style=SEVERITY_STYLE.get(alert.severity, ""))
            out.append_text(plain(alert.message or alert.rule, limit=60))
        if len(run.alerts) > MAX_ALERT_LINES:
            out.append(f"\n+{len(run.alerts) - MAX_ALERT_LINES} more alerts", style="dim")
        if run.alerts[0].remedy:
            out.append("\n→ ")
            out.append_text(plain(run.alerts[0].remedy, style="italic", limit=80))
    else:
        out.append("\nno active alerts", style="dim green")
    return out


class RunCard(Static, can_focus=True):
    """A focusable card; ``x``/``delete`` on it (or a click on its ✕) removes the run."""

    DEFAULT_CSS = """
    RunCard {
        width: 1fr; height: auto; min-height: 6; padding: 0 1; border: round $panel;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    RunCard:focus { border: round $accent; }
    """

    class RemoveRequested(Message):
        """The user asked to take this card's run out of the comparison."""

        def __init__(self, run: str) -> None:
            super().__init__()
            self.run = run

    def __init__(self, run: str, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.run = run
        self.border_subtitle = "✕ remove"
        self._key: tuple[object, ...] = ()

    def show(self, run: CompareRun, slot: int, diff_keys: Sequence[str]) -> None:
        key = (run.version, run.status, slot, tuple(diff_keys))
        if key == self._key:
            return  # unchanged: skip the re-layout
        self._key = key
        self.update(render_card(run, slot, diff_keys))

    def on_click(self, event: object) -> None:
        # The subtitle (bottom border, right) is the remove button; elsewhere a click focuses.
        y = getattr(event, "y", -1)
        x = getattr(event, "x", -1)
        if y == self.size.height - 1 and x >= self.size.width - len("✕ remove") - 3:
            self.post_message(self.RemoveRequested(self.run))
        else:
            self.focus()
