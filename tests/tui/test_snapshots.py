"""SVG snapshots of the dashboard on a fixed fleet with a frozen clock (no sockets, no timing)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import fixed_fleet, frozen_clock, wait_until

from gradtui.tui.app import GradApp
from gradtui.tui.widgets.layer_table import LayerTable
from gradtui.tui.widgets.plots import Plots


def _app() -> GradApp:
    return GradApp(fixed_fleet(), [], clock=frozen_clock())


async def _settled(pilot: Pilot[Any], run: str = "sigmoid-deep") -> None:
    app = pilot.app
    table = app.screen.query_one("#layers", LayerTable)
    await wait_until(pilot, lambda: table.frame is not None and table.frame.run == run)
    plots = app.screen.query_one("#plots", Plots)
    if plots.display:
        await wait_until(pilot, lambda: plots.settled)
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_dashboard_snapshot(snap_compare: Any, size: tuple[int, int]) -> None:
    """Guards the dashboard's look at the smallest and a wide terminal (layout, colours, NaN)."""
    assert snap_compare(_app(), terminal_size=size, run_before=_settled)


def test_nan_run_snapshot(snap_compare: Any) -> None:
    """Guards the non-finite rendering: the NaN run's table, heatmap and critical alert."""

    async def select_nan_run(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        pilot.app.screen.query_one("#runs").focus()
        await pilot.press("j")
        await _settled(pilot, "nan-run")

    assert snap_compare(_app(), terminal_size=(160, 48), run_before=select_nan_run)


def test_help_snapshot(snap_compare: Any) -> None:
    """Guards the help screen's content and layout at 80x24."""
    assert snap_compare(_app(), terminal_size=(80, 24), press=["question_mark"])
