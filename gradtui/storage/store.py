"""One open recording file for appending: the SQL side of ``RunRecorder``.

Used only by the recorder's writer thread. Each ``write`` is one transaction: steps (scalars
and matrices), hello/heartbeat/end bookkeeping, and a packed scalar chunk whenever a run has
``CHUNK_STEPS`` unpacked rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from gradtui import __version__
from gradtui.protocol import AnyMessage, End, Heartbeat, Hello, Step
from gradtui.storage.scalars import CHUNK_STEPS, rows_to_records
from gradtui.storage.schema import SCALAR_COLUMNS, init_schema

_INSERT_STEP = (
    "INSERT OR IGNORE INTO steps (run_id, seq, step, t, loss, acc, lr, grad_norm, step_time,"
    " throughput, clipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_HELLO = (
    "UPDATE runs SET name = ?, host = ?, pid = ?, device = ?, torch = ?, every = ?, started = ?,"
    " columns = ?, layers = ?, config = ?, hello_seq = coalesce(hello_seq, ?),"
    " hello_t = coalesce(hello_t, ?) WHERE id = ?"
)


def connect_for_writing(path: Path, max_bytes: int | None = None) -> sqlite3.Connection:
    """Open (creating if needed) a recording file for appending, WAL + ``synchronous=NORMAL``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
    # timeout: how long to wait for another writer's lock (two recorders on one file).
    # Switching to WAL and creating the schema can meet SQLITE_BUSY that the busy handler
    # does not wait for (another recorder opening the same new file): retry, bounded.
    deadline = time.monotonic() + 30
    while True:
        try:
            return _open_for_writing(path, max_bytes)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _open_for_writing(path: Path, max_bytes: int | None) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash
        # or power loss can roll back the last transactions. Enough for telemetry.
        conn.execute("PRAGMA synchronous = NORMAL")
        if max_bytes is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page)}")
        init_schema(conn, __version__)
    except BaseException:
        conn.close()
        raise
    return conn


class Store:
    """One open recording file and its per-run bookkeeping. Used by the writer thread only."""

    def __init__(self, path: Path, max_bytes: int | None) -> None:
        self.path = path
        self.conn = connect_for_writing(path, max_bytes)
        self._ids: dict[tuple[str, str], int] = {}
        self._shapes: dict[int, tuple[int, int] | None] = {}
        self._packed_to: dict[int, int] = {}  # run -> last steps.id packed into a chunk
        self._unpacked: dict[int, int] = {}  # run -> steps rows after that id
        self._last_t: dict[int, float] = {}
        self.rejected = 0

    def _run_id(self, msg: AnyMessage) -> int:
        key = (msg.run, msg.inc)
        rid = self._ids.get(key)
        if rid is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO runs (run, inc, first_t, last_t) VALUES (?, ?, ?, ?)",
                (msg.run, msg.inc, msg.t, msg.t),
            )
            rid, rows, cols = self.conn.execute(
                "SELECT id, n_rows, n_cols FROM runs WHERE run = ? AND inc = ?", key
            ).fetchone()
            self._ids[key] = rid
            self._shapes[rid] = None if rows is None else (rows, cols)
            packed_to = self.conn.execute(
                "SELECT coalesce(max(last_id), 0) FROM scalar_chunks WHERE run_id = ?", (rid,)
            ).fetchone()[0]
            self._packed_to[rid] = packed_to
            self._unpacked[rid] = self.conn.execute(
                "SELECT count(*) FROM steps WHERE run_id = ? AND id > ?", (rid, packed_to)
            ).fetchone()[0]
        return rid

    def write(self, batch: list[AnyMessage]) -> None:
        """Write ``batch`` in one transaction; raises on any storage error (rolled back)."""
        conn = self.conn
        # IMMEDIATE: take the write lock first. A deferred BEGIN that reads and then writes
        # fails at once with "database is locked" if another writer committed in between.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for msg in batch:
                rid = self._run_id(msg)
                self._last_t[rid] = max(self._last_t.get(rid, msg.t), msg.t)
                if isinstance(msg, Step):
                    self._step(rid, msg)
                elif isinstance(msg, Hello):
                    self._hello(rid, msg)
                elif isinstance(msg, Heartbeat):
                    self._event(rid, msg, msg.step, msg.phase)
                elif isinstance(msg, End):
                    self._event(rid, msg, msg.step, None)
                    conn.execute(
                        "UPDATE runs SET end_status = ?, end_reason = ?, end_step = ?,"
                        " end_seq = ?, end_t = ? WHERE id = ?",
                        (msg.status, msg.reason, msg.step, msg.seq, msg.t, rid),
                    )
            conn.executemany(
                "UPDATE runs SET last_t = max(coalesce(last_t, ?), ?) WHERE id = ?",
                [(t, t, rid) for rid, t in self._last_t.items()],
            )
            self._last_t.clear()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._last_t.clear()
            raise

    def _step(self, rid: int, msg: Step) -> None:
        stats = msg.stats
        shape = (int(stats.shape[0]), int(stats.shape[1])) if stats.ndim == 2 else None
        known = self._shapes[rid]
        if shape is None or (known is not None and known != shape):
            # One run, one matrix shape: a reader must be able to stack any range of steps.
            self.rejected += 1
            return
        if known is None:
            self.conn.execute("UPDATE runs SET n_rows = ?, n_cols = ? WHERE id = ?", (*shape, rid))
            self._shapes[rid] = shape
        cur = self.conn.execute(
            _INSERT_STEP,
            (
                rid,
                msg.seq,
                msg.step,
                msg.t,
                msg.loss,
                msg.acc,
                msg.lr,
                msg.grad_norm,
                msg.step_time,
                msg.throughput,
                int(msg.clipped),
            ),
        )
        if cur.rowcount == 1:  # 0: a duplicate seq (e.g. history replayed after live data)
            blob = stats.astype("<f4", copy=False).tobytes()
            self.conn.execute(
                "INSERT INTO matrices (step_id, stats) VALUES (?, ?)", (cur.lastrowid, blob)
            )
            self._unpacked[rid] += 1
            if self._unpacked[rid] >= CHUNK_STEPS:
                self._pack(rid)

    def _pack(self, rid: int) -> None:
        """Pack the run's next CHUNK_STEPS rows (in id order) into one scalar chunk."""
        # Re-read where packing stands: another writer may append to the same run (a
        # trainer's recorder and `gradtui record -o` on one file); inside our transaction
        # the answer is consistent.
        packed_to = self.conn.execute(
            "SELECT coalesce(max(last_id), 0) FROM scalar_chunks WHERE run_id = ?", (rid,)
        ).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT id, {', '.join(SCALAR_COLUMNS)} FROM steps WHERE run_id = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (rid, packed_to, CHUNK_STEPS),
        ).fetchall()
        if len(rows) < CHUNK_STEPS:
            self._packed_to[rid], self._unpacked[rid] = packed_to, len(rows)
            return
        last_id = rows[-1][0]
        records = rows_to_records([row[1:] for row in rows])
        self.conn.execute(
            "INSERT INTO scalar_chunks (run_id, last_id, n, data) VALUES (?, ?, ?, ?)",
            (rid, last_id, len(rows), records.tobytes()),
        )
        self._packed_to[rid] = last_id
        self._unpacked[rid] -= len(rows)

    def _hello(self, rid: int, msg: Hello) -> None:
        layers = [[li.name, li.kind, li.role, list(li.shape), li.params] for li in msg.layers]
        self.conn.execute(
            _UPDATE_HELLO,
            (
                msg.name,
                msg.host,
                msg.pid,
                msg.device,
                msg.torch,
                msg.every,
                msg.started,
                json.dumps(list(msg.columns)),
                json.dumps(layers),
                json.dumps(dict(msg.config), allow_nan=True),
                msg.seq,
                msg.t,
                rid,
            ),
        )
        self._event(rid, msg, None, None)

    def _event(self, rid: int, msg: AnyMessage, step: int | None, phase: str | None) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO events (run_id, seq, kind, t, step, phase)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (rid, msg.seq, msg.kind, msg.t, step, phase),
        )

    def close(self) -> None:
        self.conn.close()
