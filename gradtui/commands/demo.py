"""``gradtui demo``: four trainers side by side, live, in the compare view.

Starts one ``python -m trainer`` subprocess per configuration (default: depth-20 MLPs on
synthetic data with sigmoid; tanh; relu; relu + BatchNorm + residual + clipping), each bound to
its own private endpoint, and opens the dashboard on the compare view of those runs. Quitting
(``q``), Ctrl-C, SIGTERM/SIGHUP of the demo or a crash of the app stops every trainer it
started (SIGTERM, then SIGKILL after a bound). Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from gradtui.demo import TrainerGroup
    from gradtui.tui.widgets.compare_timeline import CompareApp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, default=20, help="hidden layers per trainer (20)")
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per trainer; 0 = until you quit (0)"
    )
    parser.add_argument(
        "--configs",
        metavar="'FLAGS;FLAGS;...'",
        help="up to four trainer flag sets separated by ';' (a leading activation name means "
        '--act NAME), e.g. "sigmoid;relu --bn --residual" (default: sigmoid; tanh; relu; '
        "relu --bn --residual --clip-norm 1)",
    )
    parser.add_argument(
        "--width", type=int, default=128, help="units per hidden layer of every trainer (128)"
    )
    parser.add_argument(
        "--tcp",
        action="store_true",
        help="bind tcp://127.0.0.1:<free port> instead of private ipc sockets",
    )
    parser.add_argument(
        "--record-dir",
        metavar="DIR",
        default="runs",
        help="record the runs there, to replay or compare later (default: ./runs)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not record the runs")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds trainers get to stop after SIGTERM before SIGKILL (3)",
    )
    parser.add_argument("--fps", type=float, default=12.0, help="repaint rate cap (12)")
    parser.add_argument(
        "--screenshot",
        metavar="FILE.svg",
        help="run headless, save an SVG of the compare view after --screenshot-after s, quit",
    )
    parser.add_argument(
        "--screenshot-after", type=float, default=45.0, metavar="S", help="seconds (45)"
    )
    parser.add_argument(
        "--size", default="160x48", metavar="WxH", help="terminal size for --screenshot"
    )


def make_group(args: argparse.Namespace) -> TrainerGroup:
    """The trainers the flags ask for (not started).

    Raises:
        GradtuiError: (code 2) bad flags.
    """
    from gradtui.demo import DEFAULT_CONFIGS, TrainerGroup, parse_configs
    from gradtui.errors import GradtuiError

    if args.depth < 1:
        raise GradtuiError(f"--depth must be at least 1, got {args.depth}", code=2)
    if args.steps < 0:
        raise GradtuiError(f"--steps must be >= 0, got {args.steps}", code=2)
    if args.width < 1:
        raise GradtuiError(f"--width must be at least 1, got {args.width}", code=2)
    if not args.stop_timeout >= 0:
        raise GradtuiError("--stop-timeout must be >= 0", code=2)
    specs = parse_configs(args.configs if args.configs else ";".join(DEFAULT_CONFIGS))
    return TrainerGroup(
        specs,
        depth=args.depth,
        steps=args.steps,
        extra=("--width", str(args.width)),
        record_dir=None if args.no_record else args.record_dir,
        tcp=args.tcp,
    )


def make_app(
    group: TrainerGroup, *, fps: float = 12.0, screenshot: tuple[Path, float] | None = None
) -> CompareApp:
    """The dashboard on the compare view, subscribed to the group's endpoints only."""
    from gradtui.alerts import AlertEngine
    from gradtui.state import Fleet
    from gradtui.tui.live_source import LiveSource
    from gradtui.tui.widgets.compare_timeline import CompareApp

    fleet = Fleet(observer_factory=AlertEngine)
    source = LiveSource(group.endpoints)

    def problems() -> list[str]:
        return [
            f"trainer {t.spec.label} exited with code {t.process.returncode}: {t.last_error()}"
            for t in group.failed()
        ]

    return CompareApp(
        fleet,
        [source],
        open_compare=True,
        auto=True,
        problems=problems,
        fps=fps,
        screenshot=screenshot,
    )


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from gradtui.demo import exit_on_signals
    from gradtui.errors import GradtuiError

    group = make_group(args)
    shot: tuple[Path, float] | None = None
    size: tuple[int, int] | None = None
    if args.screenshot:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise GradtuiError(f"--size must look like 160x48, got {args.size!r}", code=2) from None
        shot, size = (Path(args.screenshot).resolve(), args.screenshot_after), (w, h)
    code = 0
    with exit_on_signals():
        try:
            group.start()
            app = make_app(group, fps=args.fps, screenshot=shot)
            code = int(app.run(headless=shot is not None, size=size) or 0)
            if app.screenshot_path:
                print(f"saved {app.screenshot_path}")
        finally:
            # Runs on quit, Ctrl-C, SIGTERM/SIGHUP (via exit_on_signals) and app crashes alike.
            killed = group.stop(timeout=args.stop_timeout)
            failed = [t for t in group.failed() if t.pid not in killed and t.process.returncode > 0]
            for t in failed:
                sys.stderr.write(
                    f"gradtui demo: trainer {t.spec.label} exited with code "
                    f"{t.process.returncode}: {t.last_error() or '(no message)'}\n"
                )
            group.cleanup()
    return code
