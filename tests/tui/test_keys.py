"""Keyboard behaviour of the dashboard on a fixed fleet (no sockets, frozen clock)."""

from __future__ import annotations

from pathlib import Path

from tui_helpers import T0, fill_run, fixed_fleet, frozen_clock, wait_until

from gradtui.state import Fleet
from gradtui.tui.app import GradApp
from gradtui.tui.screens.help import HelpScreen
from gradtui.tui.screens.layer_detail import LayerDetailScreen
from gradtui.tui.screens.main import MainScreen
from gradtui.tui.widgets.layer_table import LayerTable
from gradtui.tui.widgets.run_list import RunList


def _app(fleet: Fleet | None = None, **kw: object) -> GradApp:
    return GradApp(fleet or fixed_fleet(), [], clock=frozen_clock(), **kw)  # type: ignore[arg-type]


def _table(app: GradApp) -> LayerTable:
    return app.screen.query_one("#layers", LayerTable)


async def test_filter_narrows_and_escape_restores() -> None:
    """Guards `/` filtering: typing narrows rows by name; escape brings every layer back."""
    app = _app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 16)
        await pilot.press("slash", *"layers.1.", "enter")
        assert _table(app).row_count == 2
        assert {_table(app).row_cells(i)["name"].plain for i in range(2)} == {
            "layers.1.linear",
            "layers.1.act",
        }
        await pilot.press("slash", "escape")
        assert _table(app).row_count == 16


async def test_sort_cycles_and_keeps_nan_last() -> None:
    """Guards sorting: `o` sorts by grad RMS ascending (smallest = most vanished first)."""
    app = _app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 16)
        await pilot.press("o")
        table = _table(app)
        assert table.sort_key == "grad"
        assert table.row_cells(0)["name"].plain == "layers.0.linear"
        # Activation rows have no gradient column: they sort after every layer that has one.
        assert table.row_cells(15)["grad"].plain == "·"


async def test_enter_opens_layer_detail_and_escape_returns() -> None:
    """Guards navigation: j moves, enter opens the detail of the layer under the cursor."""
    app = _app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 16)
        await pilot.press("j", "j", "enter")
        assert isinstance(app.screen, LayerDetailScreen)
        assert app.screen.layer_index == 2
        await pilot.pause(0.3)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_help_pause_log_and_screenshot(tmp_path: Path) -> None:
    """Guards ?, space, l and s: help opens/closes, pause stops painting, SVG is written."""
    app = _app(screenshot_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.frames > 2)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("space")
        frames = app.frames
        await pilot.pause(0.3)
        assert app.paused and app.frames == frames
        await pilot.press("space", "l")
        assert not app.paused and not app.log_scale
        await pilot.press("s")
        shots = list(tmp_path.glob("gradtui-*.svg"))
        assert len(shots) == 1 and shots[0].stat().st_size > 1000
        assert any(str(shots[0]) in n.message for n in app._notifications)


async def test_selecting_another_run_switches_the_table() -> None:
    """Guards run selection: moving in the run list repaints the layers of that run."""
    fleet = fixed_fleet()
    fill_run(fleet, "tiny", "healthy", depth=2)
    app = _app(fleet)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 16)
        runs = app.screen.query_one("#runs", RunList)
        runs.focus()
        await pilot.press("j", "j")
        assert runs.selected == "tiny"
        await wait_until(pilot, lambda: _table(app).row_count == 4)


async def test_narrow_layout_class_follows_size() -> None:
    """Guards the 80x24 layout: narrow class on, plots hidden; off on a wide terminal."""
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.has_class("narrow")
        assert not app.screen.query_one("#plots").display
    app = _app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert not app.screen.has_class("narrow")


async def test_thousand_layers_navigate_to_the_end() -> None:
    """Guards the virtual table: 1,000 layers load, and End moves to the last one."""
    fleet = Fleet()
    fill_run(fleet, "wide", "vanishing", depth=500, steps=20, t0=T0)
    app = GradApp(fleet, [], clock=frozen_clock())
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 1000)
        _table(app).focus()
        await pilot.press("end")
        assert _table(app).current_layer == 999
        assert _table(app).row_cells(999)["name"].plain == "layers.499.act"
        assert app.paint_errors == 0


async def test_c_opens_compare_and_returns() -> None:
    """Guards the compare hook: c pushes the compare view on the known runs, c again pops it."""
    from gradtui.tui.screens.compare import CompareScreen

    app = _app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: _table(app).row_count == 16)
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)
        assert set(app.screen.chosen) == {"sigmoid-deep", "nan-run"}
        await pilot.pause(0.3)
        await pilot.press("c")
        assert isinstance(app.screen, MainScreen)
        assert app.paint_errors == 0


async def test_start_screen_opens_over_the_dashboard() -> None:
    """Guards the start_screen hook (the demo opens on compare): it is on top, main beneath."""
    from gradtui.tui.screens.compare import CompareScreen

    fleet = fixed_fleet()
    app = GradApp(
        fleet, [], clock=frozen_clock(), start_screen=lambda: CompareScreen(fleet, auto=True)
    )
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("c")
        assert isinstance(app.screen, MainScreen)


async def test_degenerate_runs_do_not_break_painting() -> None:
    """Guards odd but valid runs: no layers, one column, steps before any hello, huge values."""
    import numpy as np

    from gradtui.protocol import Hello, LayerInfo, Step

    fleet = Fleet()
    fleet.apply(Hello(run="empty", inc="a", seq=0, t=T0, name="empty", layers=()), T0)
    one = (LayerInfo(name="only", kind="Linear", role="param"),)
    fleet.apply(
        Hello(run="narrow", inc="a", seq=0, t=T0, name="n", layers=one, columns=("grad_norm",)),
        T0,
    )
    big = np.array([[3e38]], np.float32)
    fleet.apply(Step(run="narrow", inc="a", seq=1, t=T0, step=2**40, loss=1e300, stats=big), T0)
    orphan = np.full((3, 11), np.inf, np.float32)
    fleet.apply(Step(run="orphan", inc="b", seq=5, t=T0, step=1, loss=0.0, stats=orphan), T0)
    app = GradApp(fleet, [], clock=frozen_clock())
    async with app.run_test(size=(80, 24)) as pilot:
        runs = app.screen.query_one("#runs", RunList)
        await wait_until(pilot, lambda: len(runs.rows) == 3)
        runs.focus()
        for _ in range(3):
            await pilot.press("j")
            await pilot.pause(0.1)
            _table(app).focus()
            await pilot.press("enter")
            await pilot.pause(0.2)
            if isinstance(app.screen, LayerDetailScreen):
                await pilot.press("escape")
            runs.focus()
        assert app.paint_errors == 0
