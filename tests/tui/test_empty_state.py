"""A first-time user who opens the dashboard before any run exists is told what to do."""

from __future__ import annotations

from tui_helpers import fill_run, frozen_clock

from gradtui.state import Fleet
from gradtui.tui.app import GradApp
from gradtui.tui.widgets.run_list import RunList


def _line(widget: RunList, y: int) -> str:
    return "".join(seg.text for seg in widget.render_line(y))


async def test_empty_run_list_shows_how_to_start_a_run() -> None:
    """Guards the empty state: no runs -> a hint naming the trainer command; gone with a run."""
    fleet = Fleet()
    app = GradApp(fleet, [], clock=frozen_clock())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        runs = app.screen.query_one(RunList)
        shown = [_line(runs, y) for y in range(1, 5)]
        assert any("waiting for runs" in line for line in shown)
        assert any("python -m trainer" in line for line in shown)
        with fleet.lock:
            fill_run(fleet, "r1", "healthy", steps=3)
        for _ in range(40):
            await pilot.pause(0.05)
            if "waiting for runs" not in _line(runs, 1):
                break
        assert "waiting for runs" not in _line(runs, 1)
