"""``gradtui record``: record runs from the wire to SQLite until Ctrl-C, SIGTERM or their end.

With no targets it records every live local run from the registry and picks up runs that
start later. Exit codes: 0 on Ctrl-C/SIGTERM (after flushing) or when ``--until-end`` sees
every run end; 1 if recording failed (unwritable path, full disk); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from gradtui.storage import RunRecorder
    from gradtui.subscribe import Subscriber

_REGISTRY_POLL_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="RUN|ENDPOINT",
        help="run ids/names from `gradtui ls`, or endpoints (default: all live local runs,"
        " including ones that start later)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="a .sqlite file for all runs, or a directory for one file per run (default: ./runs)",
    )
    parser.add_argument(
        "--until-end", action="store_true", help="exit once every recorded run has ended"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no status line")


def run(args: argparse.Namespace) -> int:
    import signal

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM takes Ctrl-C's path: flush, then exit 0

    previous = signal.signal(signal.SIGTERM, _term)
    try:
        return _record(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _clean(text: str) -> str:
    """Wire strings are untrusted: no control characters on the terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class _Targets:
    """Which endpoints to record: fixed ones, plus (with no arguments) the registry's."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.follow_registry = not targets
        self.names: dict[str, str] = {}  # run id -> name, from the registry

    def resolve(self) -> list[str]:
        from gradtui import registry
        from gradtui.endpoints import is_endpoint
        from gradtui.errors import GradtuiError

        needs_registry = self.follow_registry or not all(map(is_endpoint, self.targets))
        entries = registry.list_runs(prune=True) if needs_registry else []
        self.names.update((e.run, e.name) for e in entries)
        if self.follow_registry:
            return [e.endpoint for e in entries]
        out: list[str] = []
        for target in self.targets:
            if is_endpoint(target):
                out.append(target)
                continue
            found = [e.endpoint for e in entries if target in (e.run, e.name)]
            if not found:
                live = ", ".join(_clean(e.run) for e in entries) or "none"
                raise GradtuiError(f"no live run {_clean(target)!r}; live runs: {live}", code=2)
            out.extend(found)
        return list(dict.fromkeys(out))


def _record(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from gradtui.errors import GradtuiError
    from gradtui.protocol import End, Step
    from gradtui.storage import RunRecorder, default_directory
    from gradtui.subscribe import Subscriber

    targets = _Targets(list(args.targets))
    endpoints = targets.resolve()
    output = Path(args.output) if args.output else default_directory()
    status = _Status(sys.stderr, quiet=args.quiet)
    rec = RunRecorder(output)
    try:
        sub = Subscriber()
        for endpoint in endpoints:
            _add(sub, endpoint)
    except ValueError as exc:
        rec.close()
        raise GradtuiError(str(exc), code=2) from None
    live: set[tuple[str, str]] = set()
    ended: set[tuple[str, str]] = set()
    steps = 0
    next_scan = time.monotonic() + _REGISTRY_POLL_S
    try:
        with sub:
            if not endpoints:
                status.note("waiting for runs to start (gradtui ls) ...")
            while rec.error is None:
                for got in sub.poll(0.2):
                    msg = got.message
                    key = (msg.run, msg.inc)
                    if key not in live and key not in ended:
                        rec.hint_name(msg.run, targets.names.get(msg.run, "run"))
                        status.note(f"recording {_clean(msg.run)} from {got.endpoint}")
                    rec(msg)
                    if isinstance(msg, Step):
                        steps += 1
                    if isinstance(msg, End):
                        live.discard(key)
                        ended.add(key)
                        status.note(f"{_clean(msg.run)} ended: {msg.status}")
                    elif key not in ended:
                        live.add(key)
                if args.until_end and ended and not live:
                    break
                now = time.monotonic()
                if targets.follow_registry and now >= next_scan:
                    next_scan = now + _REGISTRY_POLL_S
                    for endpoint in targets.resolve():
                        _add(sub, endpoint)
                status.update(rec, steps, len(live), output)
    except KeyboardInterrupt:
        pass
    finally:
        flushed = rec.close(30)
        status.done(rec, steps, output, flushed)
    if rec.error is not None:
        raise GradtuiError(f"recording stopped: {rec.error}", code=1)
    return 0


def _add(sub: Subscriber, endpoint: str) -> None:
    if endpoint not in sub.endpoints:
        sub.add(endpoint)


class _Status:
    """One status line on stderr: rewritten in place on a terminal, notes on their own lines."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        import time

        self.stream = stream
        self.tty = stream.isatty()
        self.quiet = quiet
        self._next = time.monotonic()
        self._shown = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def note(self, line: str) -> None:
        if not self.quiet:
            self._write(("\r\x1b[K" if self._shown else "") + line + "\n")
            self._shown = False

    def update(self, rec: RunRecorder, steps: int, live: int, output: object) -> None:
        import time

        now = time.monotonic()
        if self.quiet or not self.tty or now < self._next:
            return
        self._next = now + 0.5
        self._write(
            f"\r\x1b[Krecording {live} live run(s) to {output}: {steps} steps received,"
            f" {rec.committed} messages committed, {rec.dropped} dropped"
        )
        self._shown = True

    def done(self, rec: RunRecorder, steps: int, output: object, flushed: bool) -> None:
        files = ", ".join(map(str, rec.paths)) or str(output)
        tail = "" if flushed else " (writer did not finish in time)"
        self.note(
            f"recorded {steps} steps ({rec.committed} messages committed, {rec.dropped}"
            f" dropped) to {files}{tail}"
        )
