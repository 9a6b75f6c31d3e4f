"""``gradtui export``: write recorded runs as CSV.

Long format by default, one row per matrix cell: ``run,step,layer,column,value`` (floats in
numpy's shortest round-trip form; ``nan``/``inf`` as such). ``--scalars`` writes one row per
step instead: ``run,step,seq,t,loss,acc,lr,grad_norm,step_time,throughput,clipped``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from gradtui.storage import RecordedRun

_CHUNK_STEPS = 256  # matrices read per query: bounded memory on 100,000-step runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a recording file or a directory of them")
    parser.add_argument(
        "--csv", action="store_true", help="CSV output (the default, and so far the only format)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--run", metavar="RUN", help="only this run id or name (default: every run)"
    )
    parser.add_argument(
        "--scalars", action="store_true", help="one row per step (loss, lr, ...) instead of cells"
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from gradtui.errors import GradtuiError
    from gradtui.storage import open_recording

    with open_recording(args.path) as recording:
        runs = recording.runs if args.run is None else [recording.run(args.run)]
        try:
            if args.output is None:
                _export(runs, sys.stdout, args.scalars)
                sys.stdout.flush()
            else:
                with open(args.output, "w", newline="", encoding="utf-8") as out:
                    _export(runs, out, args.scalars)
        except BrokenPipeError:
            # `gradtui export x | head`: stop quietly; keep exit-time flush from raising.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError as exc:
            raise GradtuiError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return 0


def _export(runs: list[RecordedRun], out: TextIO, scalars: bool) -> None:
    from gradtui.storage.schema import SCALAR_COLUMNS

    header = ("run", *SCALAR_COLUMNS) if scalars else ("run", "step", "layer", "column", "value")
    out.write(",".join(header) + "\n")
    for rec in runs:
        if scalars:
            _scalars(rec, out)
        else:
            _cells(rec, out)


def _scalars(rec: RecordedRun, out: TextIO) -> None:
    from gradtui.storage.schema import SCALAR_COLUMNS

    table = rec.scalars()
    # str() of numpy scalars: shortest round-trip floats, nan/inf, True/False.
    cols = [[str(v) for v in table[c]] for c in SCALAR_COLUMNS]
    run = _quote(rec.run)
    out.writelines(f"{run},{','.join(row)}\n" for row in zip(*cols, strict=True))


def _quote(text: str) -> str:
    """One CSV field; layer names come from the wire and may hold commas or quotes."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow((text,))
    return buf.getvalue()


def _labels(rec: RecordedRun) -> list[str]:
    """``layer,column,`` prefixes, one per matrix cell in C order."""
    from gradtui.protocol import COLUMNS

    rows, cols = rec.shape or (0, 0)
    hello = rec.hello
    if hello is not None and len(hello.layers) == rows:
        layers = [li.name for li in hello.layers]
    else:
        layers = [f"row{i}" for i in range(rows)]
    if hello is not None and len(hello.columns) == cols:
        columns = list(hello.columns)
    elif len(COLUMNS) == cols:
        columns = list(COLUMNS)
    else:
        columns = [f"col{j}" for j in range(cols)]
    return [f"{_quote(layer)},{_quote(column)}," for layer in layers for column in columns]


def _cells(rec: RecordedRun, out: TextIO) -> None:
    if not rec.steps:
        return
    labels = _labels(rec)
    run = _quote(rec.run)
    import numpy as np

    scal = np.unique(rec.scalars()["step"])  # unique: a chunk boundary must not repeat a step
    for lo in range(0, len(scal), _CHUNK_STEPS):
        chunk = scal[lo : lo + _CHUNK_STEPS]
        steps, stack = rec.stats(int(chunk[0]), int(chunk[-1]) + 1)
        for step, matrix in zip(steps.tolist(), stack, strict=True):
            head = f"{run},{step},"
            # str() of a numpy float32 is its shortest round-trip form: 0.1, not 0.100000001.
            values = [str(v) for v in matrix.ravel()]
            out.write(
                "".join(f"{head}{lab}{val}\n" for lab, val in zip(labels, values, strict=True))
            )
