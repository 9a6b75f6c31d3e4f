"""``gradtui ls``: the live runs registered on this machine."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array of runs")
    from gradtui.remote import add_ssh_arguments  # argparse only: cheap

    add_ssh_arguments(parser)


def run(args: argparse.Namespace) -> int:
    # Deferred so `gradtui --help` stays cheap.
    import dataclasses
    import json
    import sys
    import time

    from gradtui import registry
    from gradtui.commands.tail import clean

    if args.ssh:
        from gradtui.remote import discover, ssh_settings

        entries = discover(args.ssh, **ssh_settings(args))  # RemoteError: one line, exit 2
    else:
        entries = registry.list_runs(prune=True)
    if args.json:
        print(json.dumps([dataclasses.asdict(e) for e in entries], indent=None))
        return 0
    if not entries:
        sys.stderr.write("no live runs\n")
        return 0
    rows = [("NAME", "RUN", "ENDPOINT", "PID", "STEP", "STARTED")]
    for e in entries:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started))
        step = str(e.step) if e.step >= 0 else "-"
        rows.append((clean(e.name), e.run, clean(e.endpoint), str(e.pid), step, started))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0
