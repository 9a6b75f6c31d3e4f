"""Opening recordings: check a file is one, list its runs (``RecordedRun``), or a directory's.

One-line ``RecordingError``s for a missing path, a non-SQLite file, a foreign SQLite file and
a newer schema version.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import cast

from gradtui.errors import GradtuiError
from gradtui.protocol import End, EndStatus, Hello, LayerInfo
from gradtui.storage.run import RecordedRun, Stack, Steps
from gradtui.storage.schema import FORMAT_NAME, SCHEMA_VERSION, SQLITE_MAGIC, SUFFIX

__all__ = ["RecordedRun", "Recording", "RecordingError", "Stack", "Steps", "open_recording"]


class RecordingError(GradtuiError):
    """A recording that cannot be read; the message is one line fit for the terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


_RUN_FIELDS = (
    "id, run, inc, name, host, pid, device, torch, every, started, columns, layers, config,"
    " hello_seq, hello_t, n_rows, n_cols, first_t, last_t, end_status, end_reason, end_step,"
    " end_seq, end_t"
)


def _hello(row: sqlite3.Row) -> Hello | None:
    if row["layers"] is None:
        return None
    layers = tuple(
        LayerInfo(name=n, kind=k, role=r, shape=tuple(s), params=p)
        for n, k, r, s, p in json.loads(row["layers"])
    )
    return Hello(
        run=row["run"],
        inc=row["inc"],
        seq=row["hello_seq"] or 0,
        t=row["hello_t"] or 0.0,
        name=row["name"] or "",
        layers=layers,
        columns=tuple(json.loads(row["columns"])),
        config=json.loads(row["config"]),
        host=row["host"] or "",
        pid=row["pid"] or 0,
        device=row["device"] or "",
        torch=row["torch"] or "",
        every=row["every"] or 1,
        started=row["started"] or 0.0,
    )


def _end(row: sqlite3.Row) -> End | None:
    if row["end_status"] is None:
        return None
    return End(
        run=row["run"],
        inc=row["inc"],
        seq=row["end_seq"],
        t=row["end_t"],
        status=cast(EndStatus, row["end_status"]),
        reason=row["end_reason"] or "",
        step=row["end_step"],
    )


def _connect(path: Path) -> sqlite3.Connection:
    try:
        with path.open("rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != SQLITE_MAGIC:
        raise RecordingError(f"{path} is not a gradtui recording (not an SQLite file)")
    try:
        # check_same_thread=False: a viewer may open in the UI thread and read in a worker;
        # Python's sqlite3 is built serialized (threadsafety 3), so sharing is safe.
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise RecordingError(f"cannot open {path}: {exc}") from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RecordingError(
                f"{path} has recording schema version {version}; this gradtui reads up to"
                f" version {SCHEMA_VERSION} (upgrade gradtui)"
            )
        fmt = None
        if version == SCHEMA_VERSION:
            fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if fmt is None or fmt[0] != FORMAT_NAME:
            raise RecordingError(f"{path} is an SQLite file but not a gradtui recording")
    except sqlite3.Error as exc:
        conn.close()
        raise RecordingError(f"cannot read {path}: {exc}") from None
    except RecordingError:
        conn.close()
        raise
    conn.row_factory = None
    return conn


def _runs(path: Path, conn: sqlite3.Connection) -> list[RecordedRun]:
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(f"SELECT {_RUN_FIELDS} FROM runs ORDER BY first_t, id").fetchall()
        counts = dict(conn.execute("SELECT run_id, count(*) FROM steps GROUP BY run_id"))
    except sqlite3.Error as exc:
        raise RecordingError(f"cannot read {path}: {exc}") from None
    finally:
        conn.row_factory = None
    out = []
    for row in rows:
        try:
            hello = _hello(row)
        except (ValueError, TypeError) as exc:
            raise RecordingError(f"{path}: bad hello for run {row['run']!r}: {exc}") from None
        shape = None if row["n_rows"] is None else (row["n_rows"], row["n_cols"])
        out.append(
            RecordedRun(
                path=path,
                run=row["run"],
                inc=row["inc"],
                hello=hello,
                end=_end(row),
                steps=counts.get(row["id"], 0),
                shape=shape,
                first_t=row["first_t"] or 0.0,
                last_t=row["last_t"] or 0.0,
                _conn=conn,
                _id=row["id"],
            )
        )
    return out


class Recording:
    """Recorded runs from one file or every ``*.sqlite`` file of a directory."""

    def __init__(self, paths: list[Path], skip_bad: bool = False) -> None:
        self.paths: list[Path] = []
        """The files read."""
        self.skipped: list[tuple[Path, str]] = []
        """Files of a directory that could not be read, with the reason."""
        self._conns: list[sqlite3.Connection] = []
        self.runs: list[RecordedRun] = []
        try:
            for path in paths:
                try:
                    conn = _connect(path)
                    self._conns.append(conn)
                    self.runs.extend(_runs(path, conn))
                except RecordingError as exc:
                    if not skip_bad:
                        raise
                    self.skipped.append((path, str(exc)))
                else:
                    self.paths.append(path)
            if not self.paths:
                raise RecordingError(f"no readable recording among {len(paths)} files")
        except BaseException:
            self.close()
            raise

    def run(self, selector: str | None = None) -> RecordedRun:
        """The run whose id or name is ``selector`` (or starts with it); None: the only run.

        Raises:
            RecordingError: no run, or more than one, matches.
        """
        if selector is None:
            found = self.runs
        else:
            found = [r for r in self.runs if selector in (r.run, r.name)] or [
                r for r in self.runs if r.run.startswith(selector)
            ]
        if len(found) == 1:
            return found[0]
        names = ", ".join(sorted({r.run for r in found or self.runs})) or "none"
        what = "no run" if not found else "several runs"
        sel = "" if selector is None else f" matching {selector!r}"
        raise RecordingError(f"{what}{sel} in {self._where()} (runs: {names})")

    def _where(self) -> str:
        return str(self.paths[0]) if len(self.paths) == 1 else f"{len(self.paths)} files"

    def close(self) -> None:
        """Close the files; runs read afterwards raise ``sqlite3.ProgrammingError``."""
        for conn in self._conns:
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Recording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_recording(path: str | Path) -> Recording:
    """Open a recording file, or every ``*.sqlite`` file in a directory, for reading.

    Raises:
        RecordingError: missing path, empty directory, not an SQLite file, not a gradtui
            recording, or a schema version newer than this gradtui reads. In a directory,
            unreadable files are skipped (``Recording.skipped``) unless none is readable.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(f"*{SUFFIX}"))
        if not files:
            raise RecordingError(f"no recordings (*{SUFFIX}) in {p}")
        # One bad file (e.g. a recorder killed before it created its tables) must not hide
        # the others: skip it, and say so in ``skipped``.
        return Recording(files, skip_bad=True)
    if not p.exists():
        raise RecordingError(f"no such recording: {p}")
    return Recording([p])
