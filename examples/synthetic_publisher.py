"""Publish fake gradient telemetry without torch: feeds ``gradtui watch`` / ``gradtui tail``.

python examples/synthetic_publisher.py --name demo --depth 8 --mode vanishing --rate 20
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gradtui.errors import GradtuiError
from gradtui.publish import Publisher
from gradtui.synthetic import MODES, SyntheticRun, synthetic_layers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--depth", type=int, default=8, help="Linear+activation blocks")
    parser.add_argument("--act", default="sigmoid")
    parser.add_argument("--mode", choices=MODES, default="vanishing")
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second (0: flat out)")
    parser.add_argument("--steps", type=int, default=0, help="stop after N steps (0: forever)")
    parser.add_argument("--endpoint", default=None, help="default: private ipc socket")
    parser.add_argument("--run", default=None, help="run id (default: random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    layers = synthetic_layers(args.depth, args.act)
    fake = SyntheticRun(layers, mode=args.mode, seed=args.seed)
    config = {"depth": args.depth, "act": args.act, "mode": args.mode, "seed": args.seed}
    try:
        pub = Publisher(
            name=args.name, layers=layers, config=config, endpoint=args.endpoint, run=args.run
        )
    except GradtuiError as exc:
        sys.stderr.write(f"synthetic_publisher: {exc}\n")
        return exc.code
    print(f"run {pub.run} publishing on {pub.endpoint}", flush=True)
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = time.monotonic()
    step = 0
    try:
        while args.steps <= 0 or step < args.steps:
            pub.publish_step(
                step=step,
                loss=fake.loss(step),
                stats=fake.stats(step),
                grad_norm=fake.grad_norm(step),
                lr=fake.lr,
                step_time=period,
                throughput=64 / period if period else float("nan"),
            )
            step += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pub.close("interrupted", "KeyboardInterrupt")
        return 0
    pub.close("finished")
    print(f"sent {pub.sent} messages, dropped {pub.dropped}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
