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
    from gradtui.protocol import AnyMessage
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
        list_runs: the registry lookup (injectable for tests, or ``RemoteRuns.local_entries``).
        history: join each run's snapshot history with its live stream (late joiners see the
            run from its start; ``gradtui.snapshot.Seam``).
        resolve: maps a run's snapshot endpoint to one reachable from here (an SSH tunnel).
        snapshot_timeout: bound on one history fetch (it runs on the receive thread).
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
        history: bool = True,
        resolve: Callable[[str, str], str] | None = None,
        snapshot_timeout: float = 3.0,
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
        self._seam: Any = None
        self._history = history
        self._resolve = resolve
        self.snapshot_timeout = snapshot_timeout
        self.snapshot_failures = 0

    def open(self) -> None:
        from gradtui.subscribe import Subscriber  # deferred: zmq is imported on first use

        self._sub = Subscriber(self.fixed, watchdog_s=self.watchdog_s)
        if self._history:
            from gradtui.snapshot import Seam

            self._seam = Seam()
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
        for entry in entries:
            if entry.endpoint in current - self._discovered and self._seam and entry.snapshot:
                # Known from the registry: fetch history at once, without waiting for a hello.
                self._seam.expect(entry.run, entry.snapshot)
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
        if self._seam is None:
            return [(r.message, r.received, r.endpoint) for r in received]
        out: list[Item] = []
        source = {}
        for r in received:
            source[r.message.run] = r.endpoint
            out += [(m, r.received, r.endpoint) for m in self._seam.offer(r.message)]
        for run, snap_ep in self._seam.wanted():
            out += self._join_history(run, snap_ep, source.get(run, ""))
        return out

    def _join_history(self, run: str, snapshot_endpoint: str, endpoint: str) -> list[Item]:
        """Fetch a run's history and join it to the held-back live messages."""
        from gradtui.snapshot import fetch_snapshot
        from gradtui.state import HISTORY_SOURCE_PREFIX

        snap = None
        try:
            target = self._resolve(snapshot_endpoint, run) if self._resolve else snapshot_endpoint
            snap = fetch_snapshot(target, run, self.snapshot_timeout)
        except Exception as exc:  # no history is not fatal: live data still flows
            self.snapshot_failures += 1
            self._health.error = f"history of {run}: {type(exc).__name__}: {exc}"[:200]
        now = time.time()
        last = snap.last_seq if snap is not None else -1
        inc = snap.inc if snap is not None else ""
        items: list[Item] = []
        history_end, split = -1, 0
        for msg in self._seam.complete(run, snap):
            from_history = msg.inc == inc and msg.seq <= last
            if from_history:
                history_end, split = max(history_end, msg.seq), len(items) + 1
            label = HISTORY_SOURCE_PREFIX + endpoint if from_history else endpoint
            items.append((msg, now, label))
        if snap is not None and history_end < last:
            # The snapshot covers seqs up to ``last`` but keeps no heartbeats: a stand-in for
            # the last one, right after the history, tells the state those seqs were not lost.
            items.insert(split, (self._seq_marker(run, inc, last), now, HISTORY_SOURCE_PREFIX))
        return items

    @staticmethod
    def _seq_marker(run: str, inc: str, seq: int) -> AnyMessage:
        from gradtui.protocol import Heartbeat

        return Heartbeat(run=run, inc=inc, seq=seq)

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
