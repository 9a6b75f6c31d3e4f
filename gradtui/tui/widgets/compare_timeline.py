"""The replay timeline bar, and ``CompareApp``: the dashboard opened on the compare view.

``CompareApp`` is ``GradApp`` plus: a ``c`` key (and palette entry) for the compare view, an
option to open on it (``gradtui demo``), and, given a ``ReplaySource``, step keys that move the
replay cursor (``[``/``]`` 1% of the run, ``{``/``}`` 10%, ``home``/``end``) with a clickable
timeline bar on the main and compare screens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from gradtui.tui import app as app_module
from gradtui.tui.app import GradApp
from gradtui.tui.screens.compare import CompareScreen

if TYPE_CHECKING:
    from gradtui.replay_source import ReplaySource, Timeline
    from gradtui.state import Fleet
    from gradtui.tui.receiver import Source


def bar_text(tl: Timeline, width: int) -> Text:
    """``replay  step 1,234 / 100,000 [████░░░░]  [ ] ±1%  { } ±10%  home/end``."""
    head = Text(no_wrap=True, end="")
    head.append(" replay ", style="bold reverse")
    if tl.error:
        head.append(f" {tl.error}", style="bold red")
        return head
    head.append(f" step {tl.cursor:,} / {tl.last:,} ")
    tail = Text("  [ ] ±1%  { } ±10%  home/end", style="dim", no_wrap=True, end="")
    if tl.loading:
        tail = Text("  loading…", style="yellow", no_wrap=True, end="")
    room = max(4, width - len(head) - len(tail) - 2)
    filled = round(tl.fraction() * room)
    head.append("[", style="dim")
    head.append("█" * filled, style="cyan")
    head.append("░" * (room - filled), style="dim")
    head.append("]", style="dim")
    head.append_text(tail)
    return head


class ReplayBar(Static):
    """One line: the replay cursor over the recorded step range; a click seeks there.

    Docked at the top: the bottom edge already holds the status bar and the footer.
    """

    DEFAULT_CSS = """
    ReplayBar { dock: top; height: 1; width: 1fr; }
    """

    def __init__(self, source: ReplaySource) -> None:
        super().__init__("", classes="replay-bar")
        self.source = source
        self._shown: tuple[object, ...] = ()

    def on_mount(self) -> None:
        self.set_interval(0.1, self.sync)
        self.sync()

    def sync(self) -> None:
        tl = self.source.timeline
        key = (tl, self.size.width)
        if key != self._shown:
            self._shown = key
            self.update(bar_text(tl, self.size.width))

    def on_click(self, event: events.Click) -> None:
        tl = self.source.timeline
        text = bar_text(tl, self.size.width).plain
        start, end = text.find("["), text.find("]")
        if 0 <= start < event.x < end:
            fraction = (event.x - start - 1) / max(1, end - start - 2)
            self.source.seek(round(tl.first + fraction * (tl.last - tl.first)))


class CompareApp(GradApp):
    """The dashboard with the compare view (and replay controls when replaying).

    Args:
        fleet, sources: as ``GradApp``.
        replay: the replay source among ``sources``, if any (its cursor gets keys and a bar).
        open_compare: start on the compare view instead of the main screen.
        compare_runs: run ids to compare first; auto: add runs as they appear (up to four).
        **kwargs: passed to ``GradApp`` (clock, fps, thresholds...).
    """

    # Textual resolves a relative CSS_PATH against the subclass's module: point at the app's.
    CSS_PATH = str(Path(app_module.__file__).with_name("gradtui.tcss"))
    BINDINGS: ClassVar[list[BindingType]] = [
        *GradApp.BINDINGS,
        Binding("c", "compare", "compare"),
        Binding("left_square_bracket", "replay_move(-0.01)", "back", show=False),
        Binding("right_square_bracket", "replay_move(0.01)", "fwd", show=False),
        Binding("left_curly_bracket", "replay_move(-0.1)", "back 10%", show=False),
        Binding("right_curly_bracket", "replay_move(0.1)", "fwd 10%", show=False),
        # Priority: tables and lists use home/end too; in a replay they mean the timeline
        # (``check_action`` hands them back to text inputs and to live, non-replay use).
        Binding("home", "replay_edge(0)", "start", show=False, priority=True),
        Binding("end", "replay_edge(1)", "end", show=False, priority=True),
    ]

    def __init__(
        self,
        fleet: Fleet,
        sources: Sequence[Source] = (),
        *,
        replay: ReplaySource | None = None,
        open_compare: bool = False,
        compare_runs: Sequence[str] = (),
        auto: bool = False,
        problems: Callable[[], list[str]] | None = None,
        screenshot: tuple[Path, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fleet, sources, **kwargs)
        self.replay = replay
        self._open_compare = open_compare
        self._compare_runs = list(compare_runs)
        self._auto = auto
        self._problems = problems
        self._reported: set[str] = set()
        self._shot_plan = screenshot
        self.screenshot_path: str | None = None
        """Where ``screenshot`` was saved, once it has been."""

    def on_mount(self) -> None:
        # GradApp.on_mount (called by Textual after this one) pushes the main screen first.
        self.call_after_refresh(self._after_main)

    def _after_main(self) -> None:
        if self.replay is not None:
            self.screen.mount(ReplayBar(self.replay))
        if self._open_compare:
            self.action_compare()
        if self._problems is not None:
            self.set_interval(1.0, self._check_problems)
        if self._shot_plan is not None:
            self.set_timer(self._shot_plan[1], self._take_screenshot)

    def _take_screenshot(self) -> None:
        assert self._shot_plan is not None
        path = self._shot_plan[0]
        self.screenshot_path = self.save_screenshot(filename=path.name, path=str(path.parent))
        self.exit(0)

    def _check_problems(self) -> None:
        for line in self._problems() if self._problems else []:
            if line not in self._reported:
                self._reported.add(line)
                self.notify(line, severity="error", timeout=10, markup=False)

    def compare_screen(self) -> CompareScreen:
        runs = self._compare_runs
        if not runs:
            with self.fleet.lock:
                runs = list(self.fleet.runs)[:4]
        screen = CompareScreen(self.fleet, runs, auto=self._auto or not runs)
        return screen

    def action_compare(self) -> None:
        if isinstance(self.screen, CompareScreen):
            return
        screen = self.compare_screen()
        self.push_screen(screen)
        replay = self.replay
        if replay is not None:
            screen.call_after_refresh(lambda: screen.mount(ReplayBar(replay)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("replay_move", "replay_edge"):
            from textual.widgets import Input

            return self.replay is not None and not isinstance(self.focused, Input)
        return super().check_action(action, parameters)

    def action_replay_move(self, fraction: float) -> None:
        if self.replay is None:
            return
        tl = self.replay.timeline
        span = max(1, tl.last - tl.first)
        delta = round(span * fraction) or (1 if fraction > 0 else -1)
        self.replay.move(delta)

    def action_replay_edge(self, end: int) -> None:
        if self.replay is not None:
            tl = self.replay.timeline
            self.replay.seek(tl.last if end else tl.first)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Compare runs", "Gradient-vs-depth, loss and heatmaps side by side", self.action_compare
        )
