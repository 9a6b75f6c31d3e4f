"""SVG snapshots of the compare view on a fixed fleet with a frozen clock (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import fixed_fleet, frozen_clock, wait_until

from gradtui.tui.screens.compare import CompareScreen
from gradtui.tui.widgets.compare_timeline import CompareApp


def _app() -> CompareApp:
    return CompareApp(fixed_fleet(), [], open_compare=True, clock=frozen_clock())


async def _settled(pilot: Pilot[Any]) -> None:
    def painted() -> bool:
        screen = pilot.app.screen
        return isinstance(screen, CompareScreen) and len(screen.frames) >= 2

    await wait_until(pilot, painted)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_compare_snapshot(snap_compare: Any, size: tuple[int, int]) -> None:
    """Guards the compare view's look (plots, shared-scale heatmaps, cards) small and wide."""
    assert snap_compare(_app(), terminal_size=size, run_before=_settled)
