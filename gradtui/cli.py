"""The ``gradtui`` command line: one subcommand per module in ``gradtui.commands``.

Each command module is cheap to import (argparse only at top level) and defers its heavy
imports (textual, zmq, sqlite) into ``run`` so ``gradtui --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from gradtui import __version__
from gradtui.errors import GradtuiError

# (name, module, one-line help); the order is the order of ``gradtui --help``.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("watch", "gradtui.commands.watch", "open the live dashboard on local, remote or given runs"),
    ("demo", "gradtui.commands.demo", "start four trainers and compare them live"),
    ("tail", "gradtui.commands.tail", "print a run's decoded telemetry stream"),
    ("ls", "gradtui.commands.ls", "list live runs registered on this machine"),
    ("record", "gradtui.commands.record", "record runs from the wire to a SQLite file"),
    ("replay", "gradtui.commands.replay", "open recorded runs in the dashboard"),
    ("report", "gradtui.commands.report", "summarise recorded runs (text, markdown, json)"),
    ("export", "gradtui.commands.export", "export a recorded run as CSV"),
    ("relay", "gradtui.commands.relay", "forward many publishers to one endpoint"),
    ("keygen", "gradtui.commands.keygen", "create CURVE keys for non-loopback endpoints"),
)


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _load(module: str) -> CommandModule | None:
    try:
        return cast(CommandModule, importlib.import_module(module))
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None  # command not built yet
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradtui", description="Live gradient-flow telemetry for PyTorch.")
    parser.add_argument("--version", action="version", version=f"gradtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name, help_text in COMMANDS:
        module = _load(module_name)
        if module is None:
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except GradtuiError as exc:
        sys.stderr.write(f"gradtui {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
