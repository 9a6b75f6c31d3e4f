"""``RunRecorder``: a non-blocking sink that records protocol messages to SQLite.

The caller (a publisher's sender thread, or ``gradtui record``) only appends to a bounded
queue; a writer thread commits batches in transactions. A full queue drops and counts,
never blocks. Any storage failure (unwritable directory, full disk) is logged once and the
recorder stops recording: training must never die because telemetry could not be saved.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from gradtui.protocol import AnyMessage, Hello, Step
from gradtui.storage.schema import run_file_name
from gradtui.storage.store import Store

log = logging.getLogger("gradtui.record")


def _is_directory_target(target: Path) -> bool:
    if target.is_dir() or str(target).endswith(os.sep):
        return True
    return not target.exists() and target.suffix == ""


class RunRecorder:
    """Record protocol messages to SQLite without ever blocking the caller.

    Args:
        target: a ``.sqlite`` file (every run goes into it) or a directory (one file per
            run id, named ``<YYYYmmdd-HHMMSS>-<name>-<run>.sqlite``). An existing
            directory, a path ending in ``/``, or a new path without a suffix is a directory.
        max_queue: messages waiting for the writer; beyond it new messages are dropped.
        max_queue_bytes: the same bound on the stats matrices' bytes (memory safety when
            the disk stalls: 64 MiB is about 15,000 steps of a 100-layer model).
        batch_seconds: the longest a message waits before its transaction commits.
        batch_messages: commit early once this many messages are queued.
        max_bytes: stop recording (with the full-disk warning) once a file would grow
            past this size; ``None``: no limit.
        on_commit: called from the writer thread after every commit with ``committed``.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        max_queue: int = 100_000,
        max_queue_bytes: int = 64 * 2**20,
        batch_seconds: float = 0.5,
        batch_messages: int = 2_000,
        max_bytes: int | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.target = Path(target)
        self.directory_mode = _is_directory_target(self.target)
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        # Two monotonic counters, each written by one side only, instead of one shared
        # "queued bytes" that both threads would update (a lost-update race without a lock).
        self._bytes_in = 0
        self._bytes_out = 0
        self._batch_seconds = batch_seconds
        self._batch_messages = batch_messages
        self._max_bytes = max_bytes
        self._on_commit = on_commit
        # deque append/popleft are atomic under the GIL: no lock on the caller's path.
        self._queue: collections.deque[AnyMessage] = collections.deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._stores: dict[str, Store] = {}
        self._name_hints: dict[str, str] = {}
        self.enqueued = 0
        """Messages accepted into the queue."""
        self._refused = 0  # written by the caller's thread only
        self._discarded = 0  # written by the writer thread only
        self.committed = 0
        """Messages whose transaction has committed (the only acknowledgement)."""
        self.error: str | None = None
        """Why recording stopped, once it has."""
        self.paths: list[Path] = []
        """Files opened so far, in order."""
        self._thread = threading.Thread(target=self._run, name="gradtui-recorder", daemon=True)
        self._thread.start()
        # Daemon thread, so a stuck disk never hangs interpreter exit; but a normal exit
        # (a script that forgot close()) still commits what is queued.
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------------ caller side

    def __call__(self, msg: AnyMessage) -> None:
        """Enqueue ``msg`` for recording; never blocks, never raises for storage trouble."""
        size = msg.stats.nbytes if isinstance(msg, Step) else 0
        if (
            self.error is not None
            or self._closing.is_set()
            or len(self._queue) >= self._max_queue
            or self._bytes_in - self._bytes_out + size > self._max_queue_bytes
        ):
            self._refused += 1
            return
        self._bytes_in += size
        self._queue.append(msg)
        self.enqueued += 1
        if len(self._queue) >= self._batch_messages:
            self._wake.set()

    def hint_name(self, run: str, name: str) -> None:
        """Name ``run``'s file in directory mode if its first message is not its hello (a
        late-joining recorder knows the name from the registry before the hello re-send)."""
        self._name_hints[run] = name

    @property
    def dropped(self) -> int:
        """Messages not recorded: refused (queue full, closed, stopped by an error) or
        discarded because recording failed while they were queued."""
        return self._refused + self._discarded

    @property
    def rejected(self) -> int:
        """Steps refused because their matrix shape differs from the run's first step."""
        # list(): the writer thread may add a store meanwhile.
        return sum(store.rejected for store in list(self._stores.values()))

    @property
    def pending(self) -> int:
        """Messages queued and not yet taken by the writer thread."""
        return len(self._queue)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting messages, commit what is queued, close the files.

        Returns:
            True if the writer finished within ``timeout`` seconds.
        """
        atexit.unregister(self._close_at_exit)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _close_at_exit(self) -> None:
        self.close(5.0)

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread

    def _open(self, key: str, path: Path) -> Store:
        store = Store(path, self._max_bytes)
        self._stores[key] = store
        self.paths.append(path)
        return store

    def _store_for(self, msg: AnyMessage) -> Store:
        key = msg.run if self.directory_mode else ""
        store = self._stores.get(key)
        if store is not None:
            return store
        if not self.directory_mode:
            return self._open(key, self.target)
        # The name is known only if the run's first message is its hello; a trainer's own
        # recorder always sees the hello first, a late-joining ``gradtui record`` may not.
        name = msg.name if isinstance(msg, Hello) else self._name_hints.get(msg.run, "run")
        return self._open(key, self.target / run_file_name(name, msg.run))

    def _write(self, batch: list[AnyMessage]) -> None:
        groups: dict[int, tuple[Store, list[AnyMessage]]] = {}
        for msg in batch:
            store = self._store_for(msg)
            groups.setdefault(id(store), (store, []))[1].append(msg)
        for store, msgs in groups.values():
            store.write(msgs)

    def _fail(self, exc: BaseException) -> None:
        where = ", ".join(map(str, self.paths)) or str(self.target)
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "gradtui: recording to %s stopped (%s); training continues without recording",
            where,
            self.error,
        )
        while self._queue:  # popleft, not clear(): every discarded message is counted
            self._queue.popleft()
            self._discarded += 1

    def _notify(self) -> None:
        if self._on_commit is None:
            return
        try:
            self._on_commit(self.committed)
        except Exception:  # a broken callback must not stop the recording
            log.exception("gradtui: on_commit callback failed; no further calls")
            self._on_commit = None

    def _run(self) -> None:
        try:
            if not self.directory_mode:
                self._open("", self.target)  # open now: report a bad path early
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
        deadline = time.monotonic() + self._batch_seconds
        while True:
            closing = self._closing.is_set()  # read first: what was queued before close is kept
            if not closing and len(self._queue) < self._batch_messages:
                self._wake.wait(max(0.0, deadline - time.monotonic()))
                self._wake.clear()
            batch: list[AnyMessage] = []
            while self._queue and len(batch) < self._batch_messages:
                msg = self._queue.popleft()
                self._bytes_out += msg.stats.nbytes if isinstance(msg, Step) else 0
                batch.append(msg)
            if batch and self.error is not None:
                self._discarded += len(batch)
            elif batch:
                try:
                    self._write(batch)
                except (sqlite3.Error, OSError) as exc:
                    self._discarded += len(batch)
                    self._fail(exc)
                else:
                    self.committed += len(batch)
                    self._notify()
            if not batch or not self._queue:
                deadline = time.monotonic() + self._batch_seconds
            if closing and not self._queue:
                break
        for store in self._stores.values():
            with contextlib.suppress(sqlite3.Error):  # committed data is safe either way
                store.close()
