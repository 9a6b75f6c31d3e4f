"""The recording file format: SQLite in WAL mode, schema version 1 (see ``docs/storage.md``).

Pure SQL text and small helpers shared by the writer and the reader; no threads, no I/O
beyond the connection passed in.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Final

SCHEMA_VERSION: Final = 1
"""Stored in ``PRAGMA user_version`` and ``meta.schema``; bumped on any incompatible change."""
FORMAT_NAME: Final = "gradtui-recording"
SUFFIX: Final = ".sqlite"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"

# One row per (run id, incarnation): a restarted trainer gets a new row, so ``seq`` stays
# gap-checkable per row. Hello fields are NULL until a hello arrives (a late joiner may see
# steps first). Scalars and matrices live in separate tables so reading every loss/grad-norm
# of a 100,000-step run scans small rows only, never the 4 KiB matrices; ``scalar_chunks``
# repeats the scalars packed 4,096 steps to a blob (see ``scalars.py``) for fast reads.
DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id         INTEGER PRIMARY KEY,
    run        TEXT NOT NULL,
    inc        TEXT NOT NULL,
    name       TEXT,
    host       TEXT,
    pid        INTEGER,
    device     TEXT,
    torch      TEXT,
    every      INTEGER,
    started    REAL,
    columns    TEXT,
    layers     TEXT,
    config     TEXT,
    hello_seq  INTEGER,
    hello_t    REAL,
    n_rows     INTEGER,
    n_cols     INTEGER,
    first_t    REAL,
    last_t     REAL,
    end_status TEXT,
    end_reason TEXT,
    end_step   INTEGER,
    end_seq    INTEGER,
    end_t      REAL,
    UNIQUE (run, inc)
);
CREATE TABLE IF NOT EXISTS steps (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    seq        INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    t          REAL NOT NULL,
    loss       REAL,
    acc        REAL,
    lr         REAL,
    grad_norm  REAL,
    step_time  REAL,
    throughput REAL,
    clipped    INTEGER NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE INDEX IF NOT EXISTS steps_by_step ON steps (run_id, step);
CREATE TABLE IF NOT EXISTS matrices (
    step_id INTEGER PRIMARY KEY REFERENCES steps (id),
    stats   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS scalar_chunks (
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    last_id INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (run_id, last_id)
);
CREATE TABLE IF NOT EXISTS events (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    seq    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    t      REAL NOT NULL,
    step   INTEGER,
    phase  TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

SCALAR_COLUMNS: Final[tuple[str, ...]] = (
    "step",
    "seq",
    "t",
    "loss",
    "acc",
    "lr",
    "grad_norm",
    "step_time",
    "throughput",
    "clipped",
)
"""The per-step scalar columns, in ``steps`` table order (``Recording.scalars`` keys)."""


def init_schema(conn: sqlite3.Connection, gradtui_version: str) -> None:
    """Create the tables in a new file, or check an existing file is one we can append to.

    ``conn`` must be in autocommit mode (``isolation_level=None``): the check and the
    creation run in one ``BEGIN IMMEDIATE`` transaction, so two recorders opening the same
    new file cannot both create it (or see it half-created).

    Raises:
        sqlite3.DatabaseError: the file is not a gradtui recording of this schema version.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError(
                    "file is an SQLite database but not a gradtui recording"
                )
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format", FORMAT_NAME),
                    ("schema", str(SCHEMA_VERSION)),
                    ("created", f"{time.time():.3f}"),
                    ("writer", f"gradtui {gradtui_version}"),
                ],
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"recording has schema version {version};"
                f" this gradtui writes version {SCHEMA_VERSION}"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 40) -> str:
    """A filename-safe fragment of an untrusted name (run names come from the wire)."""
    return _UNSAFE.sub("_", text).strip("._-")[:limit] or "run"


def run_file_name(name: str, run: str, when: float | None = None) -> str:
    """``<YYYYmmdd-HHMMSS>-<name>-<run>.sqlite``, like TensorBoard's ``./runs/<date>-<host>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{stamp}-{safe_name(name)}-{safe_name(run, 64)}{SUFFIX}"


def default_directory() -> Path:
    """Where trainer runs are recorded unless told otherwise: ``$GRADTUI_RECORD_DIR`` or
    ``./runs`` (like TensorBoard's)."""
    return Path(os.environ.get("GRADTUI_RECORD_DIR") or "runs")
