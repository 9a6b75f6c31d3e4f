"""``gradtui relay``: forward many publishers (frontend) to one endpoint viewers use (backend)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frontend",
        required=True,
        metavar="ENDPOINT",
        help="where trainers connect their publishers, e.g. tcp://127.0.0.1:5555",
    )
    parser.add_argument(
        "--backend",
        required=True,
        metavar="ENDPOINT",
        help="where viewers connect, e.g. tcp://127.0.0.1:5556",
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="the relay's CURVE secret key (gradtui keygen); required beyond loopback",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="KEY",
        help="client public key file or directory of *.key files (repeatable)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback bind WITHOUT authentication or encryption",
    )


def run(args: argparse.Namespace) -> int:
    # Deferred: zmq and the relay are only loaded when the command runs.
    import signal
    import sys
    import threading
    from types import FrameType

    from gradtui import security
    from gradtui.errors import GradtuiError
    from gradtui.relay import Relay

    curve = security.load_secret_key(args.curve_secret) if args.curve_secret else None
    allowed = security.load_allowed_keys(args.allow) if args.allow else frozenset()
    if curve is not None and not allowed:
        raise GradtuiError("--curve-secret needs at least one --allow client key", code=2)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Relay(
            args.frontend, args.backend, curve=curve, allowed=allowed, insecure=args.insecure
        ) as relay:
            for warning in relay.warnings:
                sys.stderr.write(f"gradtui relay: {warning}\n")
            print(f"gradtui relay: frontend {relay.frontend} backend {relay.backend}", flush=True)
            # Short waits: the signal handler runs between them, in this thread.
            while not stop.wait(0.2):
                if relay.wait(0):
                    raise GradtuiError(f"the proxy stopped: {relay.error}", code=1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
