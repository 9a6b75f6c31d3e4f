"""The background receive loop: sources -> ``Fleet`` under its lock, never through the UI queue.

Posting one UI message per wire message fell behind at ~8,000 msg/s (DESIGN §8), so this loop
folds batches into the shared ``Fleet`` and the app repaints from it on a timer. It never calls
``App.call_from_thread`` (that blocks until the UI runs the callback).

A *source* is anything with ``open``/``poll``/``health``/``close`` (``Source``): live endpoints
through ``gradtui.subscribe`` here, a recording later. Every source is opened, polled and closed
by the receive thread alone, because a ZeroMQ socket must stay on one thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from gradtui.protocol import AnyMessage
    from gradtui.state import Fleet

Item = tuple["AnyMessage", float, str]
"""(message, receive time, source label): what ``Fleet.apply_many`` takes."""

APPLY_CHUNK: Final = 64  # messages per lock hold, so the UI never waits long for the lock
POLL_TIMEOUT: Final = 0.05
SHED_ABOVE: Final = 2048
"""A polled batch this large means the viewer is behind the publishers."""
KEEP_PER_RUN: Final = 256
"""When behind, the newest this-many steps of each run in the batch are kept, older ones shed."""


@dataclass(slots=True)
class SourceHealth:
    """What a source reports about its connections, for the status bar."""

    endpoints: tuple[str, ...] = ()
    received: int = 0
    malformed: int = 0
    rebuilds: int = 0
    error: str = ""


class Source(Protocol):
    """A stream of decoded messages the receive loop polls (live endpoints or a recording)."""

    label: str

    def open(self) -> None:
        """Acquire sockets/files; called on the receive thread."""

    def poll(self, timeout: float) -> list[Item]:
        """Messages available now, waiting at most ``timeout`` seconds for the first."""

    def health(self) -> SourceHealth:
        """Counters for the status bar; must be cheap and safe to call from the UI thread."""

    def close(self) -> None:
        """Release everything; called on the receive thread."""


@dataclass(slots=True)
class ReceiverStats:
    """Counters the receive thread updates and the UI/benchmarks read (plain ints: atomic)."""

    applied: int = 0
    batches: int = 0
    max_batch: int = 0
    errors: int = 0
    last_error: str = ""
    shed: int = 0
    """Steps dropped on purpose because the viewer was behind (they also count as seq gaps)."""
    shed_by_run: dict[str, int] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    """Receive-to-applied minus sender ``t``: publish-to-state latency, seconds (recent)."""


class Receiver:
    """Runs the sources on one background thread and applies what they yield to the fleet."""

    def __init__(
        self,
        fleet: Fleet,
        sources: Sequence[Source],
        *,
        clock: Callable[[], float] = time.time,
        measure_latency: bool = False,
    ) -> None:
        self.fleet = fleet
        self.sources = list(sources)
        self.stats = ReceiverStats()
        self._clock = clock
        self._measure = measure_latency
        self._stop = threading.Event()
        self._done = threading.Event()
        self._health: dict[str, SourceHealth] = {}

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait for the loop to finish (sources closed); True when it has."""
        return self._done.wait(timeout)

    def health(self) -> list[SourceHealth]:
        return list(self._health.values())

    def run(self) -> None:
        """The thread body: open, poll until stopped, close. Never raises."""
        try:
            opened = self._open_all()
            while not self._stop.is_set():
                self._step(opened)
        finally:
            for src in self.sources:
                try:
                    src.close()
                except Exception as exc:  # a failing close must not keep others open
                    self._note_error(src, exc)
            self._done.set()

    def _open_all(self) -> list[Source]:
        opened = []
        for src in self.sources:
            try:
                src.open()
                opened.append(src)
            except Exception as exc:
                self._note_error(src, exc)
        return opened

    def _step(self, sources: list[Source]) -> None:
        if not sources:
            self._stop.wait(POLL_TIMEOUT)
            return
        # Only the first source may block, so N sources still cycle every POLL_TIMEOUT.
        for i, src in enumerate(sources):
            try:
                items = src.poll(POLL_TIMEOUT if i == 0 else 0.0)
                self._apply(items)
                self._health[src.label] = src.health()
            except Exception as exc:  # nothing from the wire may kill the loop
                self._note_error(src, exc)
                self._stop.wait(POLL_TIMEOUT)

    def _shed(self, items: list[Item]) -> list[Item]:
        """Drop the oldest steps of runs that are far behind, so the view stays current.

        Applying a step (history + alert rules) costs more than receiving it; under overload
        keeping every step would let latency grow until ZeroMQ's high-water mark drops
        messages blindly. Shedding here is counted per run and shown in the status bar.
        """
        from gradtui.protocol import Step  # cheap; deferred only to keep this module light
        from gradtui.state import HISTORY_SOURCE_PREFIX

        def live_step(item: Item) -> bool:
            # A late joiner's snapshot is the history it asked for: never shed it.
            return isinstance(item[0], Step) and not item[2].startswith(HISTORY_SOURCE_PREFIX)

        counts: dict[str, int] = {}
        for item in items:
            msg = item[0]
            if live_step(item):
                counts[msg.run] = counts.get(msg.run, 0) + 1
        excess = {run: n - KEEP_PER_RUN for run, n in counts.items() if n > KEEP_PER_RUN}
        if not excess:
            return items
        kept: list[Item] = []
        for item in items:
            msg = item[0]
            left = excess.get(msg.run, 0)
            if left > 0 and live_step(item):
                excess[msg.run] = left - 1
                self.stats.shed_by_run[msg.run] = self.stats.shed_by_run.get(msg.run, 0) + 1
                self.stats.shed += 1
                continue
            kept.append(item)
        return kept

    def _apply(self, items: list[Item]) -> None:
        if not items:
            return
        if len(items) > SHED_ABOVE:
            items = self._shed(items)
        for start in range(0, len(items), APPLY_CHUNK):
            if start:
                # Release the GIL between chunks: a thread waiting for the lock (the UI taking
                # its snapshot) gets in instead of starving behind a long backlog.
                time.sleep(0)
            self.fleet.apply_many(items[start : start + APPLY_CHUNK])
        n = len(items)
        self.stats.applied += n
        self.stats.batches += 1
        self.stats.max_batch = max(self.stats.max_batch, n)
        if self._measure:
            now = self._clock()
            self.stats.latencies.extend(now - msg.t for msg, _, _ in items)

    def _note_error(self, src: Source, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{src.label}: {type(exc).__name__}: {exc}"
        prev = self._health.get(src.label, SourceHealth())
        self._health[src.label] = SourceHealth(
            prev.endpoints, prev.received, prev.malformed, prev.rebuilds, self.stats.last_error
        )
