"""``gradtui replay PATH ...``: recorded runs in the dashboard, with a step cursor.

Every view works on recordings as on live runs (main, compare with ``c``). ``[``/``]`` move the
cursor by 1% of the run, ``{``/``}`` by 10%, ``home``/``end`` to either end; a click on the
timeline bar seeks. Heavy imports (textual, sqlite reads) happen inside ``run``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="recording files (*.sqlite) or directories"
    )
    parser.add_argument(
        "--step", type=int, metavar="N", help="open at step N (default: the end of the runs)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="open on the compare view (first four runs)"
    )
    parser.add_argument("--config", metavar="FILE", help="alert thresholds (TOML)")


def run(args: argparse.Namespace) -> int:
    from gradtui.storage.reader import open_recording

    # Fail fast, in one line, on a missing or foreign file: before the terminal is taken over.
    for path in args.paths:
        open_recording(path).close()

    from gradtui.alerts import AlertConfig, AlertEngine, load_config
    from gradtui.replay_source import ReplaySource
    from gradtui.state import Fleet
    from gradtui.tui.widgets.compare_timeline import CompareApp

    cfg = load_config(args.config) if args.config else AlertConfig()
    fleet = Fleet(observer_factory=lambda: AlertEngine(cfg))
    source = ReplaySource(
        args.paths, fleet, observer_factory=lambda: AlertEngine(cfg), start=args.step
    )
    app = CompareApp(fleet, [source], replay=source, open_compare=args.compare)
    return int(app.run() or 0)
