"""``gradtui record``: record runs from the wire to SQLite until Ctrl-C, SIGTERM or their end.

With no targets it records every live local run from the registry and picks up runs that
start later. Exit codes: 0 on Ctrl-C/SIGTERM (after flushing) or when ``--until-end`` sees
every run end; 1 if recording failed (unwritable path, full disk); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

    from gradtui.registry import RunEntry
    from gradtui.remote import RemoteRuns
    from gradtui.storage import RunRecorder

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
    from gradtui.remote import add_ssh_arguments  # argparse only: cheap

    add_ssh_arguments(parser)


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
    from gradtui.registry import printable

    return printable(text)


class _Targets:
    """Which endpoints to record: fixed ones, plus (with no arguments) the registry's."""

    def __init__(
        self, targets: list[str], list_runs: Callable[[], list[RunEntry]] | None = None
    ) -> None:
        self._list_runs = list_runs
        self.targets = targets
        self.follow_registry = not targets
        self.names: dict[str, str] = {}  # run id -> name, from the registry

    def lookup(self) -> list[RunEntry]:
        """The registry's live runs (or the remote host's, through tunnels)."""
        from gradtui import registry

        if self._list_runs is not None:
            entries = self._list_runs()
        else:
            entries = registry.list_runs(prune=True)
        self.names.update((e.run, e.name) for e in entries)
        return entries

    def resolve(self) -> list[str]:
        from gradtui import registry
        from gradtui.endpoints import is_endpoint

        needs_registry = self.follow_registry or not all(map(is_endpoint, self.targets))
        entries = self.lookup() if needs_registry else []
        if self.follow_registry:
            return [e.endpoint for e in entries]
        return registry.resolve_endpoints(self.targets, entries)


def _record(args: argparse.Namespace) -> int:
    from gradtui.errors import GradtuiError

    remote = None
    if args.ssh:
        from gradtui.remote import RemoteRuns, ssh_settings

        remote = RemoteRuns(args.ssh, **ssh_settings(args)).start()
        if remote.error and not remote.runs():
            remote.close()
            raise GradtuiError(f"--ssh {args.ssh}: {remote.error}", code=2)
    try:
        return _record_from(args, remote)
    finally:
        if remote is not None:
            remote.close()  # no ssh tunnel outlives the recorder


def _record_from(args: argparse.Namespace, remote: RemoteRuns | None) -> int:
    import sys
    from pathlib import Path

    from gradtui.errors import GradtuiError
    from gradtui.protocol import End, Step
    from gradtui.state import HISTORY_SOURCE_PREFIX
    from gradtui.storage import RunRecorder, default_directory
    from gradtui.tui.live_source import LiveSource  # no textual: subscriber + registry + seam

    targets = _Targets(list(args.targets), remote.local_entries if remote else None)
    if remote is not None:
        targets.follow_registry = True  # new remote runs are picked up as they appear
    endpoints = targets.resolve()
    output = Path(args.output) if args.output else default_directory()
    status = _Status(sys.stderr, quiet=args.quiet)
    rec = RunRecorder(output)
    # A late recorder still records each run from its start: LiveSource joins the run's
    # snapshot history with the live stream, and rescans the registry for new runs.
    source = LiveSource(
        [] if targets.follow_registry else endpoints,
        discover=targets.follow_registry,
        list_runs=targets.lookup,
        rescan_s=_REGISTRY_POLL_S,
        resolve=remote.local_for if remote else None,
    )
    try:
        source.open()
    except ValueError as exc:
        rec.close()
        raise GradtuiError(str(exc), code=2) from None
    live: set[tuple[str, str]] = set()
    ended: set[tuple[str, str]] = set()
    steps = 0
    try:
        if not endpoints:
            status.note("waiting for runs to start (gradtui ls) ...")
        while rec.error is None:
            for msg, _, label in source.poll(0.2):
                key = (msg.run, msg.inc)
                if key not in live and key not in ended:
                    rec.hint_name(msg.run, targets.names.get(msg.run, "run"))
                    where = label.removeprefix(HISTORY_SOURCE_PREFIX) or "history"
                    status.note(f"recording {_clean(msg.run)} from {_clean(where)}")
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
            status.update(rec, steps, len(live), output)
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
        flushed = rec.close(30)
        status.done(rec, steps, output, flushed)
    if rec.error is not None:
        raise GradtuiError(f"recording stopped: {rec.error}", code=1)
    return 0


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
