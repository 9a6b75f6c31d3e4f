"""Overhead of gradtui's probe on a training step, against TensorBoard and wandb.watch.

Method: one persistent worker process per variant (same model, same seed, same pre-generated
batches), all started by this parent. After setup and warm-up the parent runs them in
interleaved rounds, in a fresh random order each round, each timing ``--steps`` training steps
in chunks of 10 and reporting the median chunk's time per step. Each round yields one paired
ratio ``t_variant / t_baseline`` and one added time per step, so slow drifts of a shared machine
cancel; we report the median and the interquartile range over rounds. Between segments the
parent waits ``--settle`` seconds so one variant's background threads (wandb's, TensorBoard's
writer, gradtui's sender) finish before the next variant is timed.

Variants:
- ``baseline``: forward, cross-entropy, backward, SGD step;
- ``monitor_1`` / ``monitor_10``: ``gradtui.probe.Monitor`` publishing every step / every 10th
  (PUB socket bound on loopback; no viewer connected, so every message is still encoded and sent);
- ``tb_full``: ``SummaryWriter.add_histogram`` of every parameter's gradient and ``add_scalar``
  of every parameterised layer's gradient norm, every step;
- ``tb_scalars``: only the per-layer gradient-norm scalars, every step;
- ``wandb``: ``wandb.watch(model, log="gradients", log_freq=1)`` in offline mode, plus the
  ``wandb.log({"loss": ...})`` per step that commits the watched histograms.

Run: ``.venv/bin/python benchmarks/overhead.py`` (``--help`` for rounds, steps, threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("baseline", "monitor_1", "monitor_10", "tb_full", "tb_scalars", "wandb")
MODELS: dict[str, dict[str, int]] = {
    "default": {"depth": 20, "width": 256, "batch": 128},
    "small": {"depth": 20, "width": 64, "batch": 64},
}
# Steps per timed segment: about one second of work on a 2-core CPU for each model. A segment
# is timed in chunks of CHUNK steps and reports its median chunk.
CHUNK = 10
DEFAULT_STEPS = {"default": 60, "small": 300}
TARGETS = {
    ("default", "monitor_1"): 1.05,
    ("small", "monitor_1"): 1.20,
    ("default", "monitor_10"): 1.01,
    ("small", "monitor_10"): 1.01,
}


# --------------------------------------------------------------------------- worker side


def _worker(model_key: str, variant: str, threads: int, tmp: str) -> None:
    """Set up one variant, then answer ``run K`` lines with the seconds K steps took."""
    import torch
    import torch.nn.functional as F

    from trainer.data import SyntheticTask
    from trainer.model import build_model

    torch.set_num_threads(threads)
    spec = MODELS[model_key]
    torch.manual_seed(0)
    model = build_model(
        arch="mlp",
        in_shape=(1, 28, 28),
        classes=10,
        depth=spec["depth"],
        width=spec["width"],
        act="sigmoid",
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    task = SyntheticTask(seed=0)
    data = [task.batch(spec["batch"]) for _ in range(8)]
    hook, close = _instrument(variant, model, opt, tmp)

    def steps(n: int, start: int) -> None:
        for i in range(start, start + n):
            x, y = data[i % len(data)]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            hook(i, loss)
            opt.step()

    done = 0
    steps(20, done)  # warm-up: allocator, hooks, sockets, first files
    done += 20
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] != "run":
            break
        chunks = []
        for _ in range(int(cmd[1]) // CHUNK):
            t0 = time.perf_counter()
            steps(CHUNK, done)
            chunks.append(time.perf_counter() - t0)
            done += CHUNK
        # Median chunk: robust to other processes' bursts on a shared box; a chunk of 10
        # steps holds exactly one of every periodic cost (monitor every 10, log_freq 1, ...).
        print(f"{statistics.median(chunks) / CHUNK:.9f}", flush=True)
    close()


def _instrument(
    variant: str, model: object, opt: object, tmp: str
) -> tuple[Callable[[int, object], None], Callable[[], None]]:
    """The per-step hook and the cleanup for ``variant``."""
    import torch
    from torch import nn

    assert isinstance(model, nn.Module)
    layers = [(n, m) for n, m in model.named_modules() if list(m.parameters(recurse=False))]

    if variant == "baseline":
        return (lambda i, loss: None), (lambda: None)
    if variant.startswith("monitor_"):
        from gradtui.probe import Monitor

        every = int(variant.split("_")[1])
        mon = Monitor(model, name=f"bench-{variant}", every=every, optimizer=opt)  # type: ignore[arg-type]

        def monitor_hook(i: int, loss: object) -> None:
            mon.step(loss, batch_size=0)  # type: ignore[arg-type]

        return monitor_hook, lambda: mon.close(status="finished")
    if variant.startswith("tb_"):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=os.path.join(tmp, f"tb-{variant}-{os.getpid()}"))
        full = variant == "tb_full"
        params = list(model.named_parameters())

        def tb_hook(i: int, loss: object) -> None:
            if full:
                for name, p in params:
                    writer.add_histogram(f"grad/{name}", p.grad, i)
            for name, layer in layers:
                grads = [p.grad for p in layer.parameters(recurse=False) if p.grad is not None]
                norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                writer.add_scalar(f"grad_norm/{name}", float(norm), i)

        return tb_hook, writer.close
    if variant == "wandb":
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run = wandb.init(mode="offline", dir=tmp, project="gradtui-overhead")
        wandb.watch(model, log="gradients", log_freq=1)

        def wandb_hook(i: int, loss: object) -> None:
            assert isinstance(loss, torch.Tensor)
            wandb.log({"loss": loss.item()})

        return wandb_hook, run.finish
    raise SystemExit(f"unknown variant {variant}")


# --------------------------------------------------------------------------- parent side


@dataclass
class Result:
    model: str
    variant: str
    ratios: list[float]
    added_ms: list[float]
    base_ms: list[float]

    def quartiles(self, xs: list[float]) -> tuple[float, float, float]:
        q = statistics.quantiles(xs, n=4, method="inclusive")
        return q[0], statistics.median(xs), q[2]


class Worker:
    def __init__(self, model: str, variant: str, threads: int, tmp: str) -> None:
        self.variant = variant
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--model",
                model,
                "--threads",
                str(threads),
                "--tmp",
                tmp,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"worker {self.variant} failed to start (exit {self.proc.poll()})")

    def run(self, steps: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(
    model: str, variants: list[str], rounds: int, steps: int, threads: int, settle: float
) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="gradtui-bench-") as tmp:
        workers = {v: Worker(model, v, threads, tmp) for v in variants}
        for w in workers.values():
            w.wait_ready()
        times: dict[str, list[float]] = {v: [] for v in variants}
        rng = random.Random(0)
        for r in range(rounds):
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                time.sleep(settle)
                times[v].append(workers[v].run(steps))
            print(f"  {model} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        for w in workers.values():
            w.stop()
    base = times["baseline"]
    out = []
    for v in variants:
        ratios = [t / b for t, b in zip(times[v], base, strict=True)]
        added = [(t - b) * 1e3 for t, b in zip(times[v], base, strict=True)]
        out.append(Result(model, v, ratios, added, [b * 1e3 for b in base]))
    return out


def _versions() -> str:
    import importlib.metadata as md

    names = ["torch", "pyzmq", "tensorboard", "wandb", "gradtui"]
    parts = []
    for n in names:
        try:
            parts.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            parts.append(f"{n} (not installed)")
    return ", ".join(parts)


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({_cpu_name()}), "
        f"Python {platform.python_version()}",
        f"- versions: {_versions()}",
        f"- torch threads: {args.threads} (`torch.set_num_threads`), {args.rounds} rounds, "
        f"settle {args.settle}s",
        "",
        "| model | variant | base ms/step | ratio median | ratio IQR | added ms/step | target |",
        "|---|---|---|---|---|---|---|",
    ]
    wandb_added = {r.model: statistics.median(r.added_ms) for r in results if r.variant == "wandb"}
    for r in results:
        if r.variant == "baseline":
            continue
        q1, med, q3 = r.quartiles(r.ratios)
        added = statistics.median(r.added_ms)
        target = TARGETS.get((r.model, r.variant))
        verdict = ""
        if target is not None:
            verdict = f"<= {target:.2f}x: {'met' if med <= target else 'MISSED'}"
        if r.variant == "monitor_1" and r.model in wandb_added:
            factor = wandb_added[r.model] / added if added > 0 else float("inf")
            verdict += (
                f"; wandb adds {factor:.0f}x more ({'met' if factor >= 10 else 'MISSED'} >= 10x)"
            )
        lines.append(
            f"| {r.model} | {r.variant} | {statistics.median(r.base_ms):.2f} | {med:.3f}x | "
            f"{q1:.3f}-{q3:.3f} | {added:+.3f} | {verdict} |"
        )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--models", default="default,small", help="comma list of: default, small")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma list (baseline is always added)"
    )
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument(
        "--steps", type=int, help="steps per timed segment, a multiple of 10 (default: per model)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in every worker")
    p.add_argument("--settle", type=float, default=0.3, help="seconds idle before each segment")
    p.add_argument("--json", type=Path, help="also write raw per-round numbers here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args.model, args.worker, args.threads, args.tmp)
        return 0
    variants = ["baseline", *[v for v in args.variants.split(",") if v and v != "baseline"]]
    results: list[Result] = []
    for model in args.models.split(","):
        steps = args.steps or DEFAULT_STEPS[model]
        results += measure(model, variants, args.rounds, steps, args.threads, args.settle)
    text = report(results, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
