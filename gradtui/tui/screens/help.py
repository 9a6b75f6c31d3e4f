"""The help screen: every key, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from rich.table import Table
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.app import ComposeResult

KEYS: Final = (
    ("↑ ↓  j k", "move in the focused list"),
    ("PgUp PgDn Home End", "move by page / to the ends"),
    ("tab  shift+tab", "next / previous panel"),
    ("enter", "layer detail (in the layer table)"),
    ("/", "filter layers by name (esc clears)"),
    ("o", "cycle the layer sort; click a header to sort by it"),
    ("x", "mark a layer for the gradient plot"),
    ("space", "pause / resume repainting (receiving goes on)"),
    ("l", "log / linear scale for sparklines and plots"),
    ("s", "save an SVG screenshot"),
    ("c", "compare runs side by side (c again returns)"),
    ("ctrl+p", "command palette"),
    ("?", "this help"),
    ("q", "quit"),
)

LEGEND: Final = (
    "Colours: green healthy, yellow borderline, red out of range, magenta NaN/Inf.\n"
    "Heatmap: rows are parameter layers, input at the top; columns are recent steps.\n"
    "Dark toward the input = vanishing gradients; bright/magenta = exploding or non-finite.\n"
    "Run status: live (steps arriving), idle (heartbeats only), stale (silent: trainer\n"
    "dead or unreachable), finished / interrupted / crashed (the run's end message)."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "close"),
    ]

    def compose(self) -> ComposeResult:
        table = Table(show_header=False, box=None, padding=(0, 2))
        for key, what in KEYS:
            table.add_row(f"[bold]{key}[/]", what)
        with VerticalScroll(id="help-box"):
            yield Static("gradtui watch — keys", id="help-title")
            yield Static(table)
            yield Static(LEGEND, id="help-legend", markup=False)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
