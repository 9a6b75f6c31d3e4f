"""``gradtui report``: a non-interactive summary of recorded runs (text, markdown or JSON).

Exit codes: 0 report written; 2 bad arguments or unreadable recording; 3 a rule named by
``--fail-on`` fired in at least one run (the report is still written), so it can gate CI.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradtui.report import RunReport

EXIT_FAILED_ON = 3
_RULE_NAMES = (
    "nonfinite",
    "exploding",
    "vanishing",
    "saturated",
    "dead",
    "stalled_updates",
    "large_updates",
)  # == gradtui.alerts.RULES, spelled out so --help needs no numpy import


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "exit codes: 0 report written; 2 bad arguments, config or recording; "
        "3 a --fail-on rule fired (the report is still written). Rules: docs/diagnosis.md"
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="recording files or directories of them"
    )
    parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="output format"
    )
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="RULE",
        help=f"exit 3 if RULE fired in any run (repeatable or comma-separated; "
        f"rules: {', '.join(_RULE_NAMES)}, or 'any')",
    )
    parser.add_argument("--config", metavar="FILE", help="alert thresholds (TOML)")
    parser.add_argument(
        "--max-replay",
        type=int,
        default=None,
        metavar="N",
        help="replay at most N steps' matrices per run, decimated (default 1000; 0: all)",
    )


def _fail_rules(values: list[str]) -> set[str]:
    from gradtui.errors import GradtuiError

    rules = {v.strip() for value in values for v in value.split(",") if v.strip()}
    unknown = sorted(rules - {*_RULE_NAMES, "any"})
    if unknown:
        raise GradtuiError(
            f"--fail-on: unknown rule {unknown[0]!r} (rules: {', '.join(_RULE_NAMES)}, any)", 2
        )
    return rules


def run(args: argparse.Namespace) -> int:
    import sys

    from gradtui.alerts import AlertConfig, load_config
    from gradtui.errors import GradtuiError
    from gradtui.report import DEFAULT_MAX_REPLAY, summarize
    from gradtui.storage import open_recording

    fail_on = _fail_rules(args.fail_on)
    config = load_config(args.config) if args.config else AlertConfig()
    if args.max_replay is not None and args.max_replay < 0:
        raise GradtuiError("--max-replay must be >= 0", 2)
    max_replay = DEFAULT_MAX_REPLAY if args.max_replay is None else (args.max_replay or None)
    reports: list[RunReport] = []
    for path in args.paths:
        with open_recording(path) as recording:
            reports.extend(summarize(r, config, max_replay) for r in recording.runs)
    failed = sorted(
        {rule for rep in reports for rule in rep.rules if "any" in fail_on or rule in fail_on}
    )
    formatter = {"text": format_text, "markdown": format_markdown, "json": format_json}
    sys.stdout.write(formatter[args.format](reports, failed))
    sys.stdout.flush()
    return EXIT_FAILED_ON if failed else 0


# --------------------------------------------------------------------------- formatting


def _plain(text: object) -> str:
    """Wire strings are untrusted: drop control characters (ESC sequences, newlines)."""
    return "".join(ch for ch in str(text) if ch.isprintable())


def _num(value: float, spec: str = ".3g") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _config_line(config: dict[str, Any]) -> str:
    return " ".join(f"{_plain(k)}={_plain(v)}" for k, v in config.items() if v is not None)


def _steps_line(rep: RunReport) -> str:
    status = rep.status + (f" ({_plain(rep.reason)})" if rep.reason else "")
    replay = f"replayed {rep.replayed} (decimated)" if rep.decimated else "replayed all"
    span = f" ({rep.first_step}..{rep.last_step})" if rep.steps else ""
    return f"{rep.steps} recorded{span}, {status}; {replay}"


def _ratio_line(rep: RunReport) -> str:
    if not rep.first_layer:
        return "n/a"
    return (
        f"{_plain(rep.first_layer)} / {_plain(rep.last_layer)}: "
        f"{_num(rep.rms_ratio_start, '.2e')} at the start, {_num(rep.rms_ratio_end, '.2e')} "
        "at the end"
    )


def _loss_line(rep: RunReport) -> str:
    text = f"loss {_num(rep.final_loss)}, accuracy {_num(rep.final_acc)}"
    if not math.isfinite(rep.final_loss) and math.isfinite(rep.last_finite_loss):
        text += f" (last finite loss {_num(rep.last_finite_loss)})"
    return text


def format_text(reports: list[RunReport], failed: list[str]) -> str:
    lines: list[str] = []
    for rep in reports:
        lines.append(f"== {_plain(rep.name)}  (run {_plain(rep.run)}, {_plain(rep.path)})")
        lines.append(f"   config:   {_config_line(rep.config) or 'n/a'}")
        lines.append(f"   steps:    {_steps_line(rep)}")
        lines.append(f"   final:    {_loss_line(rep)}")
        lines.append(f"   grad RMS: {_ratio_line(rep)}")
        if rep.alerts:
            lines.append(f"   alerts:   {len(rep.alerts)}")
        for a in rep.alerts:
            state = ", active at the end" if a.active else ""
            lines.append(
                f"     [{a.severity}] {a.rule} steps {a.first_step}-{a.last_step}{state}: "
                f"{_plain(a.message)}"
            )
            lines.append(f"       fix: {a.remedy}")
        lines.append(f"   verdict:  {rep.verdict}")
        lines.append("")
    if failed:
        lines.append(f"--fail-on: {', '.join(failed)} fired (exit {EXIT_FAILED_ON})")
    return "\n".join(lines) + "\n"


def _cell(text: object) -> str:
    return _plain(text).replace("|", "\\|")


def format_markdown(reports: list[RunReport], failed: list[str]) -> str:
    out: list[str] = ["# gradtui report", ""]
    for rep in reports:
        out += [f"## {_cell(rep.name)}", "", "| | |", "|---|---|"]
        out.append(f"| run | `{_cell(rep.run)}` in `{_cell(rep.path)}` |")
        out.append(f"| config | {_cell(_config_line(rep.config)) or 'n/a'} |")
        out.append(f"| steps | {_cell(_steps_line(rep))} |")
        out.append(f"| final | {_cell(_loss_line(rep))} |")
        out.append(f"| gradient RMS ratio | {_cell(_ratio_line(rep))} |")
        out.append("")
        if rep.alerts:
            out += ["| rule | severity | steps | message | remedy |", "|---|---|---|---|---|"]
            for a in rep.alerts:
                steps = f"{a.first_step}-{a.last_step}" + (" (active)" if a.active else "")
                out.append(
                    f"| {a.rule} | {a.severity} | {steps} | {_cell(a.message)} | "
                    f"{_cell(a.remedy)} |"
                )
            out.append("")
        out += [f"**Verdict:** {_cell(rep.verdict)}", ""]
    if failed:
        out += [f"**--fail-on:** {', '.join(failed)} fired (exit {EXIT_FAILED_ON})", ""]
    return "\n".join(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def format_json(reports: list[RunReport], failed: list[str]) -> str:
    import dataclasses
    import json

    doc = {"runs": [dataclasses.asdict(rep) for rep in reports], "failed_on": failed}
    return json.dumps(_json_safe(doc), indent=2, allow_nan=False) + "\n"
