"""``GradApp``: composes the screens, owns the receive worker and the frame timer.

Data flows one way: sources -> receive thread -> ``Fleet`` (under its lock) -> frame timer ->
the active screen's ``paint(app, now)`` -> widgets. A screen that has no ``paint`` is simply
not fed (help, modal dialogs); new screens (compare, replay) plug in by defining ``paint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from gradtui.state import Fleet
from gradtui.tui.health import Thresholds
from gradtui.tui.receiver import Receiver, Source
from gradtui.tui.screens.help import HelpScreen
from gradtui.tui.screens.main import MainScreen
from gradtui.tui.widgets.status_bar import StatusBar, StatusInfo

QUIT_WAIT_S = 0.5  # how long quitting waits for the receive thread to close its sockets


class GradApp(App[int]):
    """The live dashboard over a ``Fleet`` fed by ``sources``.

    Args:
        fleet: shared state; the receive thread writes it, the UI reads it under ``fleet.lock``.
        sources: started on a background thread when the app mounts, closed when it quits.
        clock: wall clock for liveness (injected by tests and snapshots).
        fps: repaint rate cap; repaints happen only when state changed.
        thresholds: cell colouring thresholds.
        screenshot_dir: where ``s`` saves SVGs (default: the current directory).
        measure_latency: record publish-to-state latency (benchmarks).
        start_screen: a screen to open on top of the dashboard at start (e.g. the demo's
            compare view); the dashboard stays underneath.
    """

    CSS_PATH = "gradtui.tcss"
    TITLE = "gradtui"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        # Textual's default ctrl+c only hints at ctrl+q; in a terminal tool Ctrl-C must quit.
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("space", "toggle_pause", "pause"),
        Binding("l", "toggle_log", "log/linear"),
        Binding("s", "save_svg", "screenshot"),
        Binding("question_mark", "help", "help"),
        Binding("c", "compare", "compare"),
    ]

    def __init__(
        self,
        fleet: Fleet,
        sources: Sequence[Source] = (),
        *,
        clock: Callable[[], float] = time.time,
        fps: float = 12.0,
        thresholds: Thresholds | None = None,
        screenshot_dir: Path | None = None,
        measure_latency: bool = False,
        start_screen: Callable[[], Screen[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.fleet = fleet
        self.clock = clock
        self.fps = max(1.0, min(60.0, fps))
        self.thresholds = thresholds or Thresholds()
        self.screenshot_dir = screenshot_dir
        self.receiver = Receiver(fleet, sources, clock=clock, measure_latency=measure_latency)
        self.paused = False
        self._start_screen = start_screen
        self.log_scale = True
        self.frames = 0
        """Ticks that painted (benchmarks and tests read it)."""
        self.first_paint: float | None = None
        """``time.monotonic()`` of the first painted frame."""
        self._rate = 0.0
        self.paint_errors = 0
        """Frames whose painting raised (tests assert it stays 0)."""
        self._rate_mark = (clock(), 0)

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        if self._start_screen is not None:
            self.push_screen(self._start_screen())
        if self.receiver.sources:
            self.run_worker(
                self.receiver.run, name="receive", group="receive", exclusive=True, thread=True
            )
        self.set_interval(1.0 / self.fps, self._tick, name="frame")
        self.call_after_refresh(self._tick)

    def _tick(self) -> None:
        if self.paused:
            self._paint_status_only()
            return
        paint = getattr(self.screen, "paint", None)
        if paint is not None:
            try:
                paint(self, self.clock())
            except Exception as exc:
                # The dashboard must outlive what it shows: a frame that fails is counted and
                # reported once, and the next tick tries again from fresh state.
                self.paint_errors += 1
                if self.paint_errors == 1:
                    self.log.error(f"paint failed: {exc!r}")
                    self.notify(
                        f"display error: {type(exc).__name__}: {exc}"[:200],
                        severity="error",
                        markup=False,
                    )
                return
            self.frames += 1
            if self.first_paint is None:
                self.first_paint = time.monotonic()

    def _paint_status_only(self) -> None:
        for bar in self.screen.query(StatusBar):
            bar.show(self.status_info())

    def stop_receiving(self, wait: float = QUIT_WAIT_S) -> bool:
        """Stop the receive thread and wait (bounded) for it to close its sources."""
        self.receiver.stop()
        if not self.receiver.sources:
            return True
        return self.receiver.wait(wait)

    async def action_quit(self) -> None:
        self.stop_receiving()
        self.exit(0)

    def on_unmount(self) -> None:
        self.stop_receiving()

    # ------------------------------------------------------------------ status

    def status_info(self) -> StatusInfo:
        # The injected clock, so a frozen test clock also freezes the displayed rate.
        now = self.clock()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self._rate = (self.fleet.received - count) / (now - then)
            self._rate_mark = (now, self.fleet.received)
        health = self.receiver.health()
        endpoints = [ep for h in health for ep in h.endpoints]
        with self.fleet.lock:
            gaps = sum(r.counters.gaps for r in self.fleet.runs.values())
            mismatched = sum(r.counters.mismatched for r in self.fleet.runs.values())
        errors = [h.error for h in health if h.error] or (
            [self.receiver.stats.last_error] if self.receiver.stats.last_error else []
        )
        shed = self.receiver.stats.shed
        return StatusInfo(
            endpoints=len(endpoints),
            first_endpoint=endpoints[0] if len(endpoints) == 1 else "",
            rate=self._rate,
            received=self.fleet.received,
            gaps=max(0, gaps - shed),  # shed steps leave sequence holes too
            shed=shed,
            malformed=sum(h.malformed for h in health),
            rebuilds=sum(h.rebuilds for h in health),
            mismatched=mismatched,
            paused=self.paused,
            log_scale=self.log_scale,
            error=errors[0] if errors else "",
        )

    # ------------------------------------------------------------------ actions

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self._paint_status_only()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        repaint = getattr(self.screen, "repaint", None)
        if repaint is not None:
            repaint()
        self._paint_status_only()

    def action_save_svg(self) -> None:
        directory = self.screenshot_dir or Path.cwd()
        name = time.strftime("gradtui-%Y%m%d-%H%M%S.svg")
        try:
            path = self.save_screenshot(filename=name, path=str(directory))
        except OSError as exc:
            self.notify(f"screenshot failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"screenshot saved to {path}", markup=False)

    def action_compare(self) -> None:
        """Open the compare view on every known run (up to its limit); again to go back."""
        from gradtui.tui.screens.compare import CompareScreen  # deferred: plotext widgets

        if isinstance(self.screen, CompareScreen):
            self.pop_screen()
            return
        with self.fleet.lock:
            runs = list(self.fleet.runs)
        self.push_screen(CompareScreen(self.fleet, runs, auto=True))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Pause / resume", "Freeze the display (receiving continues)", self.action_toggle_pause
        )
        yield SystemCommand(
            "Log / linear scale", "Toggle the scale of sparklines and plots", self.action_toggle_log
        )
        yield SystemCommand(
            "Save SVG screenshot", "Write the screen to an SVG file", self.action_save_svg
        )
        yield SystemCommand("Keys and legend", "Show the help screen", self.action_help)
        yield SystemCommand(
            "Compare runs", "Runs side by side: depth profile, loss, heatmaps", self.action_compare
        )
        if isinstance(screen, MainScreen):
            yield SystemCommand(
                "Filter layers", "Filter the layer table by name", screen.action_filter
            )
            yield SystemCommand(
                "Sort layers",
                "Cycle the layer table's sort column",
                lambda: screen.query_one("#layers").run_action("cycle_sort"),
            )
