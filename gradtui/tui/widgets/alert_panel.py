"""Active and past alerts of the selected run, with step range, layers, worst value and remedy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from gradtui.tui.text import clean, fmt_num, plain

SEVERITY_STYLE: Final = {"critical": "bold white on red", "warning": "black on yellow"}


def alert_text(alerts: Sequence[Any]) -> Text:
    """All alerts as one ``Text`` built from plain pieces (names are untrusted)."""
    out = Text(no_wrap=False, end="")
    if not alerts:
        out.append("no alerts", "dim green")
        return out
    ordered = sorted(alerts, key=lambda a: (not getattr(a, "active", False), -a.first_step))
    for n, a in enumerate(ordered):
        if n:
            out.append("\n")
        sev = str(getattr(a, "severity", "warning"))
        active = bool(getattr(a, "active", False))
        out.append(f" {sev[:4].upper()} ", SEVERITY_STYLE.get(sev, "black on cyan"))
        out.append(" ")
        out.append_text(plain(str(a.rule), style="bold" if active else "dim", limit=40))
        out.append(f" steps {a.first_step}-{a.last_step}", "dim")
        out.append(" active" if active else " cleared", "bold" if active else "dim")
        layers = tuple(getattr(a, "layers", ()) or ())
        if layers:
            shown = ", ".join(clean(str(x), 40) for x in layers[:3])
            more = f" +{len(layers) - 3}" if len(layers) > 3 else ""
            out.append(f"\n  layers: {shown}{more}")
        worst = getattr(a, "worst", None)
        if isinstance(worst, float | int):
            out.append(f"  worst {fmt_num(float(worst))}", "dim")
        message = str(getattr(a, "message", ""))
        if message:
            out.append("\n  ")
            out.append_text(plain(message, limit=300))
        remedy = str(getattr(a, "remedy", ""))
        if remedy:
            out.append("\n  fix: ", "bold green")
            out.append_text(plain(remedy, limit=300))
    return out


class AlertPanel(VerticalScroll):
    """Scrollable list of alerts; repainted only when the alert list changes."""

    DEFAULT_CSS = """
    AlertPanel { height: 1fr; }
    AlertPanel > Static { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, can_focus=True)
        self._body = Static(alert_text([]), id="alert-body")
        self._key: object = None

    def compose(self):  # type: ignore[no-untyped-def]
        yield self._body

    def update_alerts(self, alerts: Sequence[Any]) -> None:
        key = tuple(
            (a.rule, a.first_step, a.last_step, getattr(a, "active", False)) for a in alerts
        )
        if key == self._key:
            return
        self._key = key
        self._body.update(alert_text(alerts))

    @property
    def text(self) -> str:
        """What the panel shows, as plain text (for tests and screen readers)."""
        return str(self._body.render())
