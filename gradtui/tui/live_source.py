"""Live endpoints as a ``Source``: a ``Subscriber`` plus registry discovery, rescanned ~1/s.

Created on the UI thread but opened, polled and closed only on the receive thread (the
Subscriber's sockets belong to that thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gradtui.tui.receiver import Item, SourceHealth

if TYPE_CHECKING:
    from gradtui.registry import RunEntry


def _default_list_runs() -> list[RunEntry]:
    from gradtui.registry import list_runs  # deferred: keeps `watch --help` cheap

    return list_runs()


def match_entries(entries: Iterable[RunEntry], names: Sequence[str]) -> list[RunEntry]:
    """Registry entries whose run id or name is one of ``names`` (all of them when empty)."""
    if not names:
        return list(entries)
    wanted = set(names)
    return [e for e in entries if e.run in wanted or e.name in wanted]


class LiveSource:
    """Subscribes to given endpoints and, with ``discover``, to registered runs as they appear.

    Args:
        endpoints: endpoints to connect to whatever the registry says.
        names: run ids or names to look up in the registry (rescanned, so late starters count).
        discover: follow the registry (all runs when ``names`` is empty).
        rescan_s: seconds between registry scans.
        watchdog_s: passed to ``Subscriber``: rebuild an endpoint silent this long.
        list_runs: the registry lookup (injectable for tests).
    """

    label = "live"

    def __init__(
        self,
        endpoints: Sequence[str] = (),
        *,
        names: Sequence[str] = (),
        discover: bool = False,
        rescan_s: float = 1.0,
        watchdog_s: float = 5.0,
        list_runs: Callable[[], list[RunEntry]] | None = None,
    ) -> None:
        self.fixed = tuple(endpoints)
        self.names = tuple(names)
        self.discover = discover or bool(names)
        self.rescan_s = rescan_s
        self.watchdog_s = watchdog_s
        self._list_runs = list_runs or _default_list_runs
        self._sub: Any = None
        self._discovered: set[str] = set()
        self._next_scan = 0.0
        self._health = SourceHealth(endpoints=self.fixed)

    def open(self) -> None:
        from gradtui.subscribe import Subscriber  # deferred: zmq is imported on first use

        self._sub = Subscriber(self.fixed, watchdog_s=self.watchdog_s)
        self._rescan(time.monotonic())

    def _rescan(self, now: float) -> None:
        self._next_scan = now + self.rescan_s
        if not self.discover or self._sub is None:
            return
        try:
            entries = match_entries(self._list_runs(), self.names)
        except Exception as exc:  # an unreadable registry must not stop live endpoints
            self._health.error = f"registry: {type(exc).__name__}: {exc}"
            return
        current = {e.endpoint for e in entries} - set(self.fixed)
        for ep in sorted(current - self._discovered):
            self._sub.add(ep)
        # A run gone from the registry (its pid died) keeps its state, which turns stale;
        # its socket is no longer needed.
        for ep in sorted(self._discovered - current):
            self._sub.remove(ep)
        self._discovered = current

    def poll(self, timeout: float) -> list[Item]:
        if self._sub is None:
            return []
        mono = time.monotonic()
        if mono >= self._next_scan:
            self._rescan(mono)
        received = self._sub.poll(timeout)
        return [(r.message, r.received, r.endpoint) for r in received]

    def health(self) -> SourceHealth:
        if self._sub is None:
            return self._health
        stats = dict(self._sub.stats)
        self._health = SourceHealth(
            endpoints=tuple(self._sub.endpoints),
            received=sum(s.received for s in stats.values()),
            malformed=sum(s.malformed for s in stats.values()),
            rebuilds=sum(s.rebuilds for s in stats.values()),
            error=self._health.error,
        )
        return self._health

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
