"""``gradtui watch [RUN|ENDPOINT ...]``: the live dashboard.

No argument: every live run in this machine's registry, and runs that start later (rescanned
about once a second). Arguments narrow it: an ``scheme://`` endpoint is connected directly; a
run id or name is looked up in the registry. A name that is not registered is an error (exit 2)
unless ``--wait`` says it may still appear. Heavy imports (textual, zmq) happen inside ``run``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="RUN|ENDPOINT",
        help="run ids/names from the registry, or endpoints like tcp://127.0.0.1:5555 "
        "(default: every live local run, including ones that start later)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for named runs that are not registered yet"
    )
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="PATH",
        help="also open recorded runs (a recording or a directory of them) "
        "beside the live ones; repeatable",
    )
    parser.add_argument("--config", metavar="FILE", help="alert thresholds (TOML)")
    parser.add_argument(
        "--vanish-ratio",
        type=float,
        metavar="R",
        help="vanishing when a layer's grad RMS < R x the largest (1e-3)",
    )
    parser.add_argument(
        "--vanish-floor",
        type=float,
        metavar="X",
        help="vanishing when a layer's grad RMS < X (1e-9)",
    )
    parser.add_argument(
        "--explode-ceiling",
        type=float,
        metavar="X",
        help="exploding when the total grad norm > X (1e3)",
    )
    parser.add_argument(
        "--saturated",
        type=float,
        metavar="F",
        help="alert when a sigmoid/tanh layer's saturated fraction > F (0.5)",
    )
    parser.add_argument(
        "--dead", type=float, metavar="F", help="alert when a ReLU layer's dead fraction > F (0.5)"
    )
    parser.add_argument(
        "--consecutive",
        type=int,
        metavar="N",
        help="published steps a condition must hold before it fires (3)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=4.0,
        metavar="S",
        help="seconds of silence before a run shows as stale (4)",
    )
    parser.add_argument(
        "--fps", type=float, default=12.0, help="repaint rate cap, frames per second (12)"
    )
    from gradtui.remote import add_ssh_arguments  # argparse only: cheap

    add_ssh_arguments(parser)


def _alert_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gradtui.alerts import AlertConfig, load_config

    cfg = load_config(args.config) if args.config else AlertConfig()
    return cfg.with_overrides(
        vanishing_ratio=args.vanish_ratio,
        vanishing_floor=args.vanish_floor,
        exploding_ceiling=args.explode_ceiling,
        saturated_fraction=args.saturated,
        dead_fraction=args.dead,
        consecutive=args.consecutive,
    )


def _resolve(targets: list[str], wait: bool) -> tuple[list[str], list[str]]:
    """Split targets into (endpoints, names); unknown names fail unless ``wait``."""
    from gradtui.endpoints import is_endpoint
    from gradtui.errors import GradtuiError
    from gradtui.registry import list_runs
    from gradtui.tui.live_source import match_entries

    endpoints = [t for t in targets if is_endpoint(t)]
    names = [t for t in targets if not is_endpoint(t)]
    if names and not wait:
        entries = list_runs()
        found = {e.run for e in match_entries(entries, names)} | {
            e.name for e in match_entries(entries, names)
        }
        missing = [n for n in names if n not in found]
        if missing:
            live = ", ".join(sorted({e.name for e in entries})) or "none"
            raise GradtuiError(
                f"no live run named {missing[0]!r} (live: {live}); use --wait to wait for it",
                code=2,
            )
    return endpoints, names


def run(args: argparse.Namespace) -> int:
    from gradtui.errors import GradtuiError

    if args.fps <= 0 or args.stale_after <= 0:
        raise GradtuiError("--fps and --stale-after must be positive", code=2)
    cfg = _alert_config(args)
    if args.ssh:
        # Names are looked up on the remote host; endpoints there are reached through tunnels.
        endpoints: list[str] = []
        names = list(args.targets)
    else:
        endpoints, names = _resolve(list(args.targets), args.wait)
    from pathlib import Path

    missing = [p for p in args.add if not Path(p).exists()]
    if missing:
        raise GradtuiError(f"--add {missing[0]}: no such file or directory", code=2)

    # Deferred: textual and zmq cost most of the start-up time.
    from gradtui.alerts import AlertEngine
    from gradtui.state import Fleet, LivenessPolicy
    from gradtui.tui.app import GradApp
    from gradtui.tui.health import Thresholds
    from gradtui.tui.live_source import LiveSource
    from gradtui.tui.receiver import Source

    def engine() -> AlertEngine:
        return AlertEngine(cfg)

    fleet = Fleet(observer_factory=engine, policy=LivenessPolicy(stale_after=args.stale_after))
    remote = None
    if args.ssh:
        from gradtui.remote import RemoteRuns, ssh_settings

        remote = RemoteRuns(args.ssh, **ssh_settings(args))
        remote.start()  # discovers once up front: an unreachable host fails here, in one line
        if remote.error and not remote.runs():
            remote.close()
            raise GradtuiError(f"--ssh {args.ssh}: {remote.error}", code=2)
        live = LiveSource(
            names=names,
            discover=True,
            list_runs=remote.local_entries,
            resolve=remote.local_for,
        )
    else:
        live = LiveSource(endpoints, names=names, discover=not endpoints or bool(names))
    sources: list[Source] = [live]
    if args.add:
        from gradtui.replay_source import ReplaySource

        # "~rec" keeps a recording of a run that is also live apart from the live run.
        sources.append(ReplaySource(args.add, fleet, observer_factory=engine, key_suffix="~rec"))
    thresholds = Thresholds(
        vanish_ratio=cfg.vanishing_ratio,
        vanish_floor=cfg.vanishing_floor,
        update_low=cfg.stalled_updates_below,
        update_high=cfg.large_updates_above,
        saturated=cfg.saturated_fraction,
        dead=cfg.dead_fraction,
    )
    app = GradApp(fleet, sources, fps=args.fps, thresholds=thresholds)
    try:
        result = app.run()
    finally:
        if remote is not None:
            remote.close()  # no ssh tunnel outlives the viewer
    return int(result or 0)
