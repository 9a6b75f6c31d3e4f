"""The compare view: 2 to 4 runs side by side (live, recorded, or both).

Top: gradient RMS against depth (one line per run) and the loss curves overlaid by step. Middle:
each run's gradient-flow heatmap on one shared colour scale. Bottom: a card per run with its
status, loss/accuracy, the flags that differ between the runs and its active alerts. A picker
on the left (``p`` shows/hides it) adds and removes runs with the keyboard or the mouse.

``GradApp``'s frame timer calls :meth:`CompareScreen.paint`; the screen rebuilds at most every
``REFRESH_S`` (plotext redraws are the costly part), copying what it paints in one short lock
hold (``compare_data.compare_runs``), and only when something changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, SelectionList, Static
from textual.widgets.selection_list import Selection

from gradtui.state import Fleet
from gradtui.tui.text import plain
from gradtui.tui.widgets.compare_cards import RunCard
from gradtui.tui.widgets.compare_data import (
    MAX_COMPARE,
    CompareRun,
    compare_runs,
    config_differences,
    shared_scale,
)
from gradtui.tui.widgets.compare_heatmaps import CompareHeatmap, scale_legend
from gradtui.tui.widgets.compare_plots import DepthProfile, LossOverlay, rich_colour
from gradtui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from gradtui.tui.app import GradApp

REFRESH_S: Final = 0.2
"""Plots are rebuilt at most 5 times a second: plotext redraws are the costly part."""
LIVENESS_S: Final = 1.0
"""Repaint at least this often even without new data, so live runs can turn stale."""


class CompareScreen(Screen[None]):
    """Side-by-side comparison of up to four runs of a ``Fleet``.

    Args:
        fleet: the runs (shared with the rest of the app; read under its lock).
        runs: run ids to start with (unknown ids are kept and appear when their data arrives).
        auto: add new runs by themselves while fewer than four are shown (``gradtui demo``).
    """

    DEFAULT_CSS = """
    CompareScreen { layout: vertical; }
    #cmp-body { height: 1fr; }
    #cmp-picker { width: 26; height: 1fr; border: round $panel; }
    #cmp-picker.-hidden { display: none; }
    #cmp-main { width: 1fr; }
    #cmp-plots { height: 1fr; min-height: 8; }
    #cmp-plots > PlotextPlot { width: 1fr; height: 1fr; }
    #cmp-heat { height: 1fr; min-height: 5; }
    #cmp-legend { height: 1; }
    #cmp-cards { height: auto; max-height: 14; }
    #cmp-empty { height: 1fr; content-align: center middle; color: $text-muted; }
    CompareScreen.-narrow #cmp-heat { min-height: 4; }
    CompareScreen.-narrow #cmp-cards { max-height: 8; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("p", "toggle_picker", "Runs"),
        Binding("x,delete", "remove", "Remove"),
        Binding("m", "toggle_mode", "Latest/window"),
    ]

    def __init__(
        self,
        fleet: Fleet,
        runs: Sequence[str] = (),
        *,
        auto: bool = False,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.fleet = fleet
        self.chosen: list[str] = list(runs)[:MAX_COMPARE]
        """Run ids being compared, in slot order (slot = colour)."""
        self.auto = auto
        self._painted_mono = 0.0
        self._ready = False  # the app's frame timer may tick before compose has finished
        self._picker_opened = False
        self._seen: set[str] = set(self.chosen)
        self._key: tuple[object, ...] = ()
        self._painted_at = 0.0
        self._picker_ids: tuple[str, ...] = ()
        self.frames: list[CompareRun] = []
        """What was painted last (tests read it)."""
        self.diff_keys: list[str] = []
        self.scale: tuple[float, float] = (-8.0, 0.0)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="cmp-body"):
            picker: SelectionList[str] = SelectionList(id="cmp-picker")
            picker.border_title = "runs (space: add/remove)"
            yield picker
            with Vertical(id="cmp-main"):
                with Horizontal(id="cmp-plots"):
                    yield DepthProfile(id="cmp-depth")
                    yield LossOverlay(id="cmp-loss")
                yield Horizontal(id="cmp-heat")
                yield Static("", id="cmp-legend")
                yield Horizontal(id="cmp-cards")
                # Docks to the bottom of this column, so it does not hide under the Footer.
                yield StatusBar(id="cmp-status")
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.call_after_refresh(self.repaint)

    def paint(self, app: GradApp, now: float) -> None:
        """Called by ``GradApp``'s frame timer; rebuilds at most every ``REFRESH_S``."""
        mono = time.monotonic()
        if self._ready and mono - self._painted_mono >= REFRESH_S:
            self._painted_mono = mono
            self.refresh_data(now)
            self.query_one("#cmp-status", StatusBar).show(app.status_info())

    def repaint(self) -> None:
        """Repaint from state now (after a setting changed, e.g. the app's log/linear key)."""
        self._key = ()
        self.refresh_data()

    def on_resize(self) -> None:
        narrow = self.size.width < 120
        self.set_class(narrow, "-narrow")
        if narrow and not self._picker_opened:
            # The picker costs 26 columns: below 120 it is shown on demand (p) only.
            self.query_one("#cmp-picker", SelectionList).add_class("-hidden")

    # ------------------------------------------------------------------ data -> widgets

    def _auto_add(self) -> None:
        with self.fleet.lock:
            ids = list(self.fleet.runs)
        for run in ids:
            if run not in self._seen:
                self._seen.add(run)
                if self.auto and len(self.chosen) < MAX_COMPARE:
                    self.chosen.append(run)

    def _now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return float(clock()) if callable(clock) else time.time()

    def refresh_data(self, now: float | None = None) -> None:
        """Copy the chosen runs from the fleet and repaint what changed."""
        self._auto_add()
        self._sync_picker()
        now = self._now() if now is None else now
        self.query_one(LossOverlay).log_y = bool(getattr(self.app, "log_scale", False))
        frames = compare_runs(self.fleet, self.chosen, now)
        key = (tuple((f.run, f.version, f.status) for f in frames), tuple(self.chosen))
        stale_due = now - self._painted_at >= LIVENESS_S
        if key == self._key and not stale_due:
            return
        self._key = key
        self._painted_at = now
        self.frames = frames
        self._sync_slots()
        present = [f.run for f in frames]
        slots = [self.chosen.index(r) for r in present]
        self.diff_keys = config_differences([f.config for f in frames])
        self.scale = shared_scale([f.heat for f in frames])
        self.query_one(DepthProfile).show(frames, slots)
        self.query_one(LossOverlay).show(frames, slots)
        by_run = {f.run: f for f in frames}
        for heat in self.query(CompareHeatmap):
            if heat.run in by_run:
                heat.show(by_run[heat.run], self.chosen.index(heat.run), self.scale)
        for card in self.query(RunCard):
            if card.run in by_run:
                card.show(by_run[card.run], self.chosen.index(card.run), self.diff_keys)
        self.query_one("#cmp-legend", Static).update(self._legend())

    def _legend(self) -> Text:
        if not self.chosen:
            return Text("no runs chosen: press p and pick up to four", style="dim")
        return scale_legend(self.scale)

    def _sync_slots(self) -> None:
        """Mount/remove one heatmap and one card per chosen run, in slot order."""
        heat_box = self.query_one("#cmp-heat", Horizontal)
        card_box = self.query_one("#cmp-cards", Horizontal)
        have = [w.run for w in heat_box.query(CompareHeatmap)]
        if have == self.chosen:
            return
        heat_box.remove_children()
        card_box.remove_children()
        heat_box.mount_all([CompareHeatmap(run) for run in self.chosen])
        card_box.mount_all([RunCard(run) for run in self.chosen])

    def _sync_picker(self) -> None:
        """Keep the picker listing every run of the fleet, checked = compared."""
        with self.fleet.lock:
            names = {r: s.name for r, s in self.fleet.runs.items()}
        ids = tuple(names)
        picker = self.query_one("#cmp-picker", SelectionList)
        if ids == self._picker_ids and set(picker.selected) == set(self.chosen) & set(ids):
            return
        self._picker_ids = ids
        highlighted = picker.highlighted
        with picker.prevent(SelectionList.SelectedChanged):
            picker.clear_options()
            picker.add_options(
                [Selection(self._prompt(run, names[run]), run, run in self.chosen) for run in ids]
            )
        if highlighted is not None and ids:
            picker.highlighted = min(highlighted, len(ids) - 1)

    def _prompt(self, run: str, name: str) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if run in self.chosen:
            text.append("■ ", style=rich_colour(self.chosen.index(run)))
        text.append_text(plain(name, limit=40))
        return text

    # ------------------------------------------------------------------ choosing runs

    def add_run(self, run: str) -> bool:
        """Put ``run`` into the comparison; False (and a notice) when four are shown already."""
        if run in self.chosen:
            return True
        if len(self.chosen) >= MAX_COMPARE:
            self.notify(f"at most {MAX_COMPARE} runs side by side; remove one first (x)")
            return False
        self.chosen.append(run)
        self._seen.add(run)
        self.refresh_data()
        return True

    def remove_run(self, run: str) -> None:
        if run in self.chosen:
            self.chosen.remove(run)
            self.refresh_data()

    def on_selection_list_selection_toggled(
        self, event: SelectionList.SelectionToggled[str]
    ) -> None:
        run = event.selection.value
        if run in self.chosen:
            self.remove_run(run)
        elif not self.add_run(run):
            self._picker_ids = ()  # repaint the picker: the toggle was refused

    def on_run_card_remove_requested(self, event: RunCard.RemoveRequested) -> None:
        self.remove_run(event.run)

    def action_remove(self) -> None:
        focused = self.focused
        if isinstance(focused, RunCard):
            self.remove_run(focused.run)
        elif isinstance(focused, SelectionList):
            index = focused.highlighted
            if index is not None:
                run = focused.get_option_at_index(index).value
                if isinstance(run, str):
                    self.remove_run(run)

    def action_toggle_picker(self) -> None:
        picker = self.query_one("#cmp-picker", SelectionList)
        hidden = picker.has_class("-hidden")
        picker.set_class(not hidden, "-hidden")
        self._picker_opened = hidden
        if hidden:
            picker.focus()

    def action_toggle_mode(self) -> None:
        depth = self.query_one(DepthProfile)
        depth.mode = "window" if depth.mode == "latest" else "latest"
        self.repaint()

    def action_close(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
