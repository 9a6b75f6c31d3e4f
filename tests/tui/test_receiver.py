"""The receive loop with in-memory sources: batching, shedding under overload, error survival."""

from __future__ import annotations

import threading

from tui_helpers import T0

from gradtui.protocol import Hello, Step
from gradtui.state import Fleet
from gradtui.synthetic import SyntheticRun, synthetic_layers
from gradtui.tui.receiver import KEEP_PER_RUN, Item, Receiver, SourceHealth


class ListSource:
    """A source that yields prepared batches, then nothing (like a finished recording)."""

    label = "list"

    def __init__(self, batches: list[list[Item]], fail_on: int = -1) -> None:
        self.batches = batches
        self.fail_on = fail_on
        self.polls = 0
        self.closed = threading.Event()

    def open(self) -> None:
        pass

    def poll(self, timeout: float) -> list[Item]:
        self.polls += 1
        if self.polls == self.fail_on:
            raise RuntimeError("boom from the source")
        return self.batches.pop(0) if self.batches else []

    def health(self) -> SourceHealth:
        return SourceHealth(endpoints=("mem://list",), received=self.polls)

    def close(self) -> None:
        self.closed.set()


def _steps(run: str, n: int) -> list[Item]:
    layers = synthetic_layers(2)
    stats = SyntheticRun(layers, mode="healthy").stats(1)
    out: list[Item] = [(Hello(run=run, inc="i", seq=0, t=T0, name=run, layers=layers), T0, "m")]
    for s in range(n):
        msg = Step(run=run, inc="i", seq=s + 1, t=T0, step=s, loss=1.0, stats=stats)
        out.append((msg, T0, "m"))
    return out


def _run_until(receiver: Receiver, cond: object) -> None:
    thread = threading.Thread(target=receiver.run)
    thread.start()
    try:
        for _ in range(200):
            if callable(cond) and cond():
                break
            threading.Event().wait(0.01)
    finally:
        receiver.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_overload_sheds_oldest_steps_and_keeps_the_latest() -> None:
    """Guards bounded latency: a huge backlog keeps the newest steps per run, counts the rest."""
    fleet = Fleet()
    src = ListSource([_steps("a", 5000)])
    receiver = Receiver(fleet, [src])
    _run_until(receiver, lambda: fleet.received > 0)
    run = fleet.runs["a"]
    assert run.latest is not None and run.latest.step == 4999
    assert run.counters.steps == KEEP_PER_RUN
    assert receiver.stats.shed == 5000 - KEEP_PER_RUN
    assert run.hello is not None  # non-step messages are never shed
    assert src.closed.is_set()


def test_small_batches_are_applied_whole() -> None:
    """Guards the normal path: below the overload threshold every step is applied."""
    fleet = Fleet()
    receiver = Receiver(fleet, [ListSource([_steps("b", 300), _steps("c", 10)])])
    _run_until(receiver, lambda: "c" in fleet.runs)
    assert fleet.runs["b"].counters.steps == 300
    assert receiver.stats.shed == 0


def test_a_failing_source_does_not_stop_the_loop() -> None:
    """Guards 'nothing from the wire can kill the app': poll errors are counted and shown."""
    fleet = Fleet()
    src = ListSource([[], _steps("d", 3)], fail_on=1)
    receiver = Receiver(fleet, [src])
    _run_until(receiver, lambda: "d" in fleet.runs)
    assert receiver.stats.errors == 1
    assert "boom from the source" in receiver.stats.last_error
    assert src.closed.is_set()
