"""``gradtui tail``: print runs' decoded telemetry, one line (or JSON object) per message.

Exit codes: 0 after ``--count`` steps, after every followed endpoint sent ``end``, or on
Ctrl-C; 1 when ``--timeout`` seconds pass without a message; 2 for an unknown run.
JSON Lines: one object per message; non-finite floats are the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (strict JSON has no such numbers).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradtui.protocol import AnyMessage, Hello, Step
    from gradtui.subscribe import Received, Subscriber


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="RUN|ENDPOINT",
        help="run ids/names from `gradtui ls`, or endpoints (default: all live local runs)",
    )
    parser.add_argument("--json", action="store_true", help="JSON Lines, one object per message")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N step messages")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="exit 1 if no message arrives for S seconds"
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    try:
        return _tail(args)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`gradtui tail | head`): stop quietly, and keep Python's
        # exit-time flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# --------------------------------------------------------------------------- resolving


def resolve_targets(targets: list[str]) -> list[str]:
    """Endpoints for the given run ids/names/endpoints; all live local runs if none given.

    Raises:
        GradtuiError: no live runs, or a name that matches no live run.
    """
    from gradtui import registry
    from gradtui.endpoints import is_endpoint
    from gradtui.errors import GradtuiError

    needs_registry = not targets or not all(is_endpoint(t) for t in targets)
    entries = registry.list_runs(prune=True) if needs_registry else []
    if not targets:
        if not entries:
            raise GradtuiError("no live runs on this machine; give an endpoint", code=1)
        return list(dict.fromkeys(e.endpoint for e in entries))
    return registry.resolve_endpoints(targets, entries)


# --------------------------------------------------------------------------- formatting


def clean(text: str) -> str:
    """Wire strings are untrusted: replace control characters (ESC, CR...) before printing."""
    from gradtui.registry import printable

    return printable(text)


def json_float(x: float) -> float | str:
    """A float as strict JSON allows: non-finite values become ``NaN``/``Infinity`` strings."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _g(x: float, spec: str = ".4g") -> str:
    return format(x, spec) if math.isfinite(x) else str(x)


def message_json(msg: AnyMessage, hello: Hello | None, endpoint: str, lost: int) -> dict[str, Any]:
    """The JSON object for one message; steps name layers and columns once the hello is known."""
    from gradtui.protocol import Hello, Step

    out: dict[str, Any] = {
        "kind": msg.kind,
        "run": msg.run,
        "inc": msg.inc,
        "seq": msg.seq,
        "t": json_float(msg.t),
        "endpoint": endpoint,
    }
    if lost:
        out["lost_before"] = lost
    if isinstance(msg, Hello):
        out.update(
            name=msg.name,
            layers=[
                {
                    "name": li.name,
                    "kind": li.kind,
                    "role": li.role,
                    "shape": list(li.shape),
                    "params": li.params,
                }
                for li in msg.layers
            ],
            columns=list(msg.columns),
            config={k: json_float(v) if isinstance(v, float) else v for k, v in msg.config.items()},
            host=msg.host,
            pid=msg.pid,
            device=msg.device,
            torch=msg.torch,
            every=msg.every,
            started=json_float(msg.started),
        )
    elif isinstance(msg, Step):
        out.update(
            step=msg.step,
            loss=json_float(msg.loss),
            lr=json_float(msg.lr),
            step_time=json_float(msg.step_time),
            throughput=json_float(msg.throughput),
            clipped=msg.clipped,
            grad_norm=json_float(msg.grad_norm),
            acc=json_float(msg.acc),
        )
        rows = [[json_float(float(v)) for v in row] for row in msg.stats.tolist()]
        if hello is not None and msg.stats.shape == (len(hello.layers), len(hello.columns)):
            out["layers"] = {
                li.name: dict(zip(hello.columns, row, strict=True))
                for li, row in zip(hello.layers, rows, strict=True)
            }
        else:  # schema not seen yet (slow joiner): the raw matrix, rows x columns
            out["stats"] = rows
    else:
        out.update(
            {k: getattr(msg, k) for k in ("step", "phase", "status", "reason") if hasattr(msg, k)}
        )
    return out


def step_line(msg: Step, hello: Hello | None) -> str:
    """One readable line for a step: loss, total norm, and the spread of layer grad RMS."""
    import numpy as np

    from gradtui.protocol import COLUMNS

    columns = hello.columns if hello is not None else COLUMNS
    parts = [f"{clean(msg.run)} step {msg.step:>7}", f"loss {_g(msg.loss)}"]
    parts.append(f"gnorm {_g(msg.grad_norm, '.3g')}")
    if "grad_rms" in columns and msg.stats.shape[1] == len(columns):
        rms = msg.stats[:, columns.index("grad_rms")].astype(np.float64)
        finite = np.flatnonzero(np.isfinite(rms) & (rms > 0))
        if finite.size:
            lo = int(finite[np.argmin(rms[finite])])
            hi = int(finite[np.argmax(rms[finite])])
            parts.append(
                f"rms min {rms[lo]:.2e} ({_row_name(hello, lo)}) max {rms[hi]:.2e} "
                f"({_row_name(hello, hi)}) ratio {rms[lo] / rms[hi]:.1e}"
            )
    if "grad_nonfinite" in columns and msg.stats.shape[1] == len(columns):
        bad = msg.stats[:, columns.index("grad_nonfinite")]
        total = float(np.nansum(bad))
        if total > 0:
            parts.append(f"NONFINITE {total:.0f}")
    if math.isfinite(msg.lr):
        parts.append(f"lr {msg.lr:.3g}")
    if math.isfinite(msg.throughput):
        parts.append(f"{msg.throughput:.0f}/s")
    if msg.clipped:
        parts.append("clipped")
    return "  ".join(parts)


def _row_name(hello: Hello | None, row: int) -> str:
    if hello is None or row >= len(hello.layers):
        return f"row {row}"
    return clean(hello.layers[row].name)


def message_line(msg: AnyMessage, hello: Hello | None) -> str | None:
    """The readable line for a non-step message (None: not worth a line)."""
    from gradtui.protocol import End, Hello

    if isinstance(msg, Hello):
        return (
            f"{clean(msg.run)} hello name={clean(msg.name)!r} inc={clean(msg.inc)} "
            f"layers={len(msg.layers)} columns={len(msg.columns)} host={clean(msg.host)} "
            f"pid={msg.pid} device={clean(msg.device) or '-'} torch={clean(msg.torch) or '-'} "
            f"every={msg.every}"
        )
    if isinstance(msg, End):
        reason = f" reason={clean(msg.reason)!r}" if msg.reason else ""
        return f"{clean(msg.run)} end status={msg.status} step={msg.step}{reason}"
    return None


# --------------------------------------------------------------------------- the loop


class _Follower:
    """Per-stream bookkeeping: schemas, sequence gaps, and which endpoints have ended."""

    def __init__(self, endpoints: list[str]) -> None:
        self.hellos: dict[tuple[str, str], Hello] = {}
        self.next_seq: dict[tuple[str, str], int] = {}
        self.live: dict[str, set[tuple[str, str]]] = {e: set() for e in endpoints}
        self.ended: set[str] = set()

    def observe(self, rec: Received) -> int:
        """Record one message; returns how many messages were lost just before it."""
        from gradtui.protocol import End, Hello

        msg = rec.message
        key = (msg.run, msg.inc)
        expected = self.next_seq.get(key)
        lost = msg.seq - expected if expected is not None and msg.seq > expected else 0
        self.next_seq[key] = max(msg.seq + 1, expected or 0)
        if isinstance(msg, Hello):
            self.hellos[key] = msg
        live = self.live.setdefault(rec.endpoint, set())
        if isinstance(msg, End):
            live.discard(key)
            self.ended.add(rec.endpoint)
        else:
            live.add(key)
        return lost

    def all_ended(self) -> bool:
        return all(ep in self.ended and not live for ep, live in self.live.items())


class _Printer:
    """Writes lines or JSON objects; holds a run's steps until its hello names the layers.

    A viewer that connects mid-run sees steps before the next periodic hello (slow joiner);
    holding them for at most ``hold_s`` keeps every JSON step keyed by layer name.
    """

    def __init__(self, as_json: bool, hold_s: float = 5.0, hold_max: int = 10_000) -> None:
        import sys

        self.out = sys.stdout
        self.as_json = as_json
        self.hold_s = hold_s
        self.hold_max = hold_max
        self.steps = 0
        self.limit: int | None = None
        """Stop writing steps after this many (``--count``)."""
        self.follower: _Follower | None = None
        self.held: dict[tuple[str, str], list[tuple[Received, int, float]]] = {}

    def feed(self, rec: Received, lost: int, first_hello: bool, now: float) -> None:
        from gradtui.protocol import Hello, Step

        assert self.follower is not None
        msg = rec.message
        key = (msg.run, msg.inc)
        hello = self.follower.hellos.get(key)
        if isinstance(msg, Step) and hello is None and len(self.held.get(key, ())) < self.hold_max:
            self.held.setdefault(key, []).append((rec, lost, now))
            return
        if isinstance(msg, Hello):  # names known now: the hello first, then its held steps
            self.write(rec, lost, first_hello)
            self._release(key)
        else:
            self._release(key)
            self.write(rec, lost, first_hello)

    def _release(self, key: tuple[str, str]) -> None:
        for held, held_lost, _ in self.held.pop(key, ()):
            self.write(held, held_lost, False)

    def expire(self, now: float) -> None:
        """Print steps held longer than ``hold_s`` without names."""
        for key in [k for k, v in self.held.items() if now - v[0][2] >= self.hold_s]:
            self._release(key)

    def write(self, rec: Received, lost: int, first_hello: bool) -> None:
        import json

        from gradtui.protocol import Hello, Step

        assert self.follower is not None
        msg = rec.message
        hello = self.follower.hellos.get((msg.run, msg.inc))
        if isinstance(msg, Step):
            if self.limit is not None and self.steps >= self.limit:
                return
            self.steps += 1
        if self.as_json:
            self.out.write(json.dumps(message_json(msg, hello, rec.endpoint, lost)) + "\n")
            return
        if lost:
            self.out.write(f"{clean(msg.run)} -- lost {lost} messages\n")
        if isinstance(msg, Step):
            self.out.write(step_line(msg, hello) + "\n")
        elif not isinstance(msg, Hello) or first_hello:
            line = message_line(msg, hello)
            if line is not None:
                self.out.write(line + "\n")


_RESCAN_S = 1.0  # registry re-read interval when following all runs


def _add_new_runs(sub: Subscriber, follower: _Follower) -> None:
    from gradtui import registry
    from gradtui.errors import GradtuiError

    try:
        entries = registry.list_runs(prune=False)
    except GradtuiError:
        return
    for entry in entries:
        if entry.endpoint not in sub.endpoints:
            try:
                sub.add(entry.endpoint)
            except ValueError:
                continue
            follower.live.setdefault(entry.endpoint, set())


def _tail(args: argparse.Namespace) -> int:
    import sys
    import time

    from gradtui.errors import GradtuiError
    from gradtui.protocol import Hello
    from gradtui.subscribe import Subscriber

    if args.count is not None and args.count < 1:
        raise GradtuiError("--count must be >= 1", code=2)
    if args.timeout is not None and args.timeout <= 0:
        raise GradtuiError("--timeout must be > 0", code=2)
    endpoints = resolve_targets(list(args.targets))
    follower = _Follower(endpoints)
    printer = _Printer(args.json)
    printer.follower = follower
    printer.limit = args.count
    last_arrival = time.monotonic()
    try:
        sub = Subscriber(endpoints)
    except ValueError as exc:
        raise GradtuiError(str(exc), code=2) from None
    next_scan = time.monotonic() + _RESCAN_S
    with sub:
        while True:
            batch = sub.poll(0.2)
            now = time.monotonic()
            if not args.targets and now >= next_scan:  # following "all runs": pick up new ones
                next_scan = now + _RESCAN_S
                _add_new_runs(sub, follower)
            for rec in batch:
                msg = rec.message
                first_hello = isinstance(msg, Hello) and (msg.run, msg.inc) not in follower.hellos
                lost = follower.observe(rec)
                printer.feed(rec, lost, first_hello, now)
                if args.count is not None and printer.steps >= args.count:
                    break
            printer.expire(now)
            printer.out.flush()
            if args.count is not None and printer.steps >= args.count:
                return 0
            if batch:
                last_arrival = now
                if follower.all_ended():
                    return 0
            elif args.timeout is not None and now - last_arrival >= args.timeout:
                sys.stderr.write(f"gradtui tail: no messages for {args.timeout:g} s\n")
                return 1
