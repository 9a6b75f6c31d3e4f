"""The run list: one row per run with status, step, loss, steps/s and alert badges."""

from __future__ import annotations

from typing import ClassVar, Final

from rich.text import Text
from textual.message import Message

from gradtui.tui.snapshot import RunRow
from gradtui.tui.text import fmt_rate, num, plain
from gradtui.tui.widgets.rows import Column, RowView

STATUS_STYLE: Final = {
    "live": "green",
    "idle": "yellow",
    "waiting": "dim",
    "stale": "bold red",
    "finished": "blue",
    "interrupted": "yellow",
    "crashed": "bold red",
}
STATUS_DOT: Final = {"live": "●", "idle": "◐", "waiting": "○", "stale": "✖"}


class RunList(RowView):
    """Runs the viewer knows, in arrival order; the cursor selects the run shown elsewhere."""

    columns: ClassVar[tuple[Column, ...]] = (
        Column("dot", " ", 1, priority=9, align="left"),
        Column("name", "run", 12, flex=True, align="left"),
        Column("status", "status", 8, priority=5, align="left"),
        Column("step", "step", 7, priority=8),
        Column("loss", "loss", 8, priority=3),
        Column("rate", "st/s", 5, priority=2),
        Column("alerts", "alerts", 6, priority=7, align="left"),
    )

    class RunHighlighted(Message):
        """The cursor moved to another run."""

        def __init__(self, run: str) -> None:
            super().__init__()
            self.run = run

    empty_hint = (
        "waiting for runs…",
        "start one in another terminal:",
        "  python -m trainer --act sigmoid",
        "or try: gradtui demo",
    )

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows: list[RunRow] = []

    @property
    def selected(self) -> str | None:
        return self.rows[self.cursor].run if 0 <= self.cursor < len(self.rows) else None

    def update_rows(self, rows: list[RunRow]) -> None:
        before = self.selected
        self.rows = rows
        if before is not None:
            for i, row in enumerate(rows):
                if row.run == before:
                    self.cursor = i
        self.set_row_count(len(rows))
        if self.selected != before and self.selected is not None:
            self.post_message(self.RunHighlighted(self.selected))

    def row_cells(self, index: int) -> dict[str, Text]:
        row = self.rows[index]
        style = STATUS_STYLE.get(row.status, "blue")
        badge = Text()
        if row.critical:
            badge.append(f"!{row.critical}", "bold white on red")
            badge.append(" ")
        if row.warnings:
            badge.append(f"▲{row.warnings}", "black on yellow")
        return {
            "dot": Text(STATUS_DOT.get(row.status, "■"), style),
            "name": plain(row.name),
            "status": Text(row.status, style),
            "step": Text(str(row.step) if row.step >= 0 else "-"),
            "loss": num(row.loss),
            "rate": Text(fmt_rate(row.steps_per_s)),
            "alerts": badge,
        }

    def cursor_moved(self) -> None:
        if self.selected is not None:
            self.post_message(self.RunHighlighted(self.selected))
