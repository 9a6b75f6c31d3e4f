"""One line at the bottom: endpoints, message rate, loss counters, pause and scale state."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from gradtui.tui.text import fmt_rate, plain


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """Numbers the app gathers once a tick for the status bar."""

    endpoints: int = 0
    first_endpoint: str = ""
    rate: float = 0.0
    received: int = 0
    gaps: int = 0
    """Messages lost on the way (sequence holes), not counting ``shed``."""
    shed: int = 0
    """Steps the viewer dropped on purpose because it was behind."""
    malformed: int = 0
    rebuilds: int = 0
    mismatched: int = 0
    paused: bool = False
    log_scale: bool = True
    error: str = ""


def status_text(info: StatusInfo) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    if info.paused:
        text.append(" PAUSED ", "bold black on yellow")
        text.append(" ")
    text.append(f"{info.endpoints} ep", "bold")
    if info.first_endpoint:
        text.append(" ")
        text.append_text(plain(info.first_endpoint, style="dim", limit=40))
    text.append(f"  {fmt_rate(info.rate)} msg/s  {info.received} rcvd")
    for label, value in (
        ("lost", info.gaps),
        ("shed", info.shed),
        ("malformed", info.malformed),
        ("rebuilt", info.rebuilds),
        ("mismatch", info.mismatched),
    ):
        text.append(f"  {label} {value}", "bold red" if value else "dim")
    text.append("  log" if info.log_scale else "  linear", "cyan")
    if info.error:
        text.append("  ")
        text.append_text(plain(info.error, style="red", limit=80))
    text.append("  ? help", "dim")
    return text


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; dock: bottom; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = StatusInfo()

    def show(self, info: StatusInfo) -> None:
        if info != self.info:
            self.info = info
            self.update(status_text(info))
