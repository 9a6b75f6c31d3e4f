"""Replay start-up: time from launching the replay app on a big recording to its first frame.

Writes (once, cached) a 100,000-step x 100-layer recording with ``RunRecorder``, then measures:
- ``open``: ``ReplaySource.open`` alone (scalars + the last 256 steps -> ``RunState``), then the
  full history it builds on the next poll (1,024-step overview + 2,048-step tail);
- ``first frame``: a headless ``CompareApp`` (``App.run_test``) from construction until the main
  screen has painted the replayed run (target < 2 s);
- ``seek``: rebuilding the state at other cursor positions (the ``[``/``]``/home/end keys).

Usage: ``python benchmarks/replay.py [--steps 100000] [--layers 100] [--path FILE] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

from gradtui.protocol import End, Hello, Step
from gradtui.storage.writer import RunRecorder
from gradtui.synthetic import SyntheticRun, synthetic_layers


def write_recording(path: Path, steps: int, layers: int) -> float:
    """A vanishing-gradient run; matrices cycle through 512 distinct steps (content is moot)."""
    rows = synthetic_layers(max(1, layers // 2), "sigmoid")
    syn = SyntheticRun(rows, mode="vanishing", seed=3)
    pool = [syn.stats(s) for s in range(512)]
    t0 = time.perf_counter()
    rec = RunRecorder(path, max_queue=10_000_000)
    rec(Hello(run="bench", inc="b", seq=0, t=0.0, name="bench-100k", layers=rows))
    for s in range(steps):
        while s % 500 == 0 and rec.pending > 2_000:
            time.sleep(0.005)  # the recorder drops beyond its queue bound: let it drain
        rec(
            Step(
                run="bench",
                inc="b",
                seq=s + 1,
                t=1.0 + s * 0.01,
                step=s,
                loss=2.3 - 1e-6 * s,
                stats=pool[s % len(pool)],
                grad_norm=1.0,
                acc=0.1,
            )
        )
    rec(End(run="bench", inc="b", seq=steps + 1, t=2.0 + steps, status="finished"))
    if not rec.close(timeout=600) or rec.dropped or rec.error:
        raise SystemExit(f"recording incomplete: dropped {rec.dropped}, error {rec.error}")
    return time.perf_counter() - t0


def time_open(path: Path) -> tuple[float, float, float]:
    from gradtui.alerts import AlertEngine
    from gradtui.replay_source import ReplaySource
    from gradtui.state import Fleet

    fleet = Fleet(observer_factory=AlertEngine)
    src = ReplaySource([path], fleet, observer_factory=AlertEngine)
    t0 = time.perf_counter()
    src.open()
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    src.poll(0.0)  # the full history after the quick first pass
    full = time.perf_counter() - t0
    seeks = []
    tl = src.timeline
    for frac in (0.5, 0.1, 0.99, 0.0):
        src.seek(round(tl.first + frac * (tl.last - tl.first)))
        t1 = time.perf_counter()
        src.poll(0.0)
        seeks.append(time.perf_counter() - t1)
    src.close()
    return opened, full, max(seeks)


async def time_empty_app() -> float:
    """Baseline: the same app with nothing to replay, until its first painted frame."""
    t0 = time.perf_counter()
    from gradtui.state import Fleet
    from gradtui.tui.widgets.compare_timeline import CompareApp

    app = CompareApp(Fleet())
    async with app.run_test(size=(160, 48)) as pilot:
        while app.first_paint is None:
            await pilot.pause(0.01)
        return time.perf_counter() - t0


async def time_first_frame(path: Path) -> float:
    t0 = time.perf_counter()
    from gradtui.alerts import AlertEngine
    from gradtui.replay_source import ReplaySource
    from gradtui.state import Fleet
    from gradtui.tui.widgets.compare_timeline import CompareApp

    fleet = Fleet(observer_factory=AlertEngine)
    src = ReplaySource([path], fleet, observer_factory=AlertEngine)
    app = CompareApp(fleet, [src], replay=src)
    async with app.run_test(size=(160, 48)) as pilot:
        while True:
            await pilot.pause(0.01)
            main = app.screen
            frame = getattr(main, "frame", None)
            if frame is not None and frame.step >= 0:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > 60:
                raise SystemExit("no frame within 60 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--layers", type=int, default=100)
    p.add_argument("--path", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    path = args.path or Path(f"/tmp/gradtui-bench-replay-{args.steps}x{args.layers}.sqlite")
    if not path.exists():
        took = write_recording(path, args.steps, args.layers)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {took:.1f} s")
    opens, fulls, seeks, frames, empty = [], [], [], [], []
    for _ in range(args.repeat):
        o, f, s = time_open(path)
        opens.append(o)
        fulls.append(f)
        seeks.append(s)
        frames.append(asyncio.run(time_first_frame(path)))
        empty.append(asyncio.run(time_empty_app()))
    print(f"python {platform.python_version()}, {platform.machine()}, {sys.platform}")
    size_mb = path.stat().st_size / 1e6
    print(f"recording: {args.steps:,} steps x {args.layers} layers, {size_mb:.0f} MB")
    print(f"open, quick pass:  median {statistics.median(opens):.3f} s (max {max(opens):.3f})")
    print(f"full history:      median {statistics.median(fulls):.3f} s (max {max(fulls):.3f})")
    print(f"worst seek:        median {statistics.median(seeks):.3f} s (max {max(seeks):.3f})")
    print(f"first frame:       median {statistics.median(frames):.3f} s (max {max(frames):.3f})")
    print(f"empty app frame:   median {statistics.median(empty):.3f} s (max {max(empty):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
