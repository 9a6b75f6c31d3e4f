"""Late joiners: 10,000 steps x 100 layers from a snapshot service to a fresh viewer.

Run: ``.venv/bin/python benchmarks/snapshot_join.py [--steps N] [--rows R]``. Prints the fetch +
decode time, the time to apply the history to viewer state, and the time for ``join()`` against
a real Publisher to yield the whole history (snapshot endpoint known up front / from the hello).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import zmq

from gradtui.protocol import Hello, Step
from gradtui.publish import Publisher
from gradtui.snapshot import HistoryStore, SnapshotServer, fetch_snapshot, join
from gradtui.state import Fleet
from gradtui.synthetic import SyntheticRun, synthetic_layers


def fetch_bench(ctx: zmq.Context[zmq.Socket[bytes]], steps: int, rows: int) -> None:
    layers = synthetic_layers(rows // 2)
    stats = SyntheticRun(layers, mode="vanishing").stats(0)
    store = HistoryStore()
    store(Hello(run="bench", inc="i", seq=0, name="bench", layers=layers))
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        store(Step(run="bench", inc="i", seq=s, step=s, loss=1.0, stats=stats))
    per_step_us = (time.perf_counter() - t0) / steps * 1e6
    fetches, applies = [], []
    with SnapshotServer(store, "tcp://127.0.0.1:*", context=ctx) as server:
        for _ in range(5):
            t0 = time.perf_counter()
            snap = fetch_snapshot(server.endpoint, "bench", 30.0, context=ctx)
            t1 = time.perf_counter()
            fleet = Fleet()
            now = time.time()
            for msg in snap.messages:
                fleet.apply(msg, now)
            fetches.append(t1 - t0)
            applies.append(time.perf_counter() - t1)
    n = sum(isinstance(m, Step) for m in snap.messages)
    print(
        f"store: {per_step_us:.1f} us/step; fetch+decode {n} steps x {rows} rows: median "
        f"{statistics.median(fetches) * 1e3:.0f} ms (max {max(fetches) * 1e3:.0f}); "
        f"Fleet.apply median {statistics.median(applies) * 1e3:.0f} ms"
    )


def join_bench(ctx: zmq.Context[zmq.Socket[bytes]], steps: int, rows: int) -> None:
    os.environ.setdefault("GRADTUI_RUNTIME_DIR", tempfile.mkdtemp())
    layers = synthetic_layers(rows // 2)
    stats = SyntheticRun(layers).stats(0)
    # The publisher's own history service (HistoryStore sink + SnapshotServer), as in a trainer.
    pub = Publisher(
        name="bench",
        layers=layers,
        endpoint="tcp://127.0.0.1:*",
        queue_size=steps + 10,
        register=False,
    )
    for s in range(steps):
        pub.publish_step(step=s, loss=1.0, stats=stats)
    while pub.sent < steps + 1:
        time.sleep(0.01)
    for known in (True, False):
        t0 = time.perf_counter()
        n = 0
        endpoint = pub.snapshot_endpoint if known else ""
        for msg in join(pub.endpoint, pub.run, snapshot_endpoint=endpoint, context=ctx):
            n += isinstance(msg, Step)
            if n == steps:
                break
        how = "known up front" if known else "from the hello"
        ms = (time.perf_counter() - t0) * 1e3
        print(f"join (snapshot endpoint {how}): {n} steps x {rows} rows in {ms:.0f} ms")
    pub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        fetch_bench(ctx, args.steps, args.rows)
        join_bench(ctx, args.steps, args.rows)
    finally:
        ctx.term()


if __name__ == "__main__":
    main()
