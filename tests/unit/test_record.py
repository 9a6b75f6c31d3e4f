"""Unit tests for the SQLite recorder and reader (real SQLite files in tmp dirs)."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gradtui.protocol import AnyMessage, End, Heartbeat, Hello, LayerInfo, Step
from gradtui.storage import RecordingError, RunRecorder, open_recording
from gradtui.storage.schema import SCHEMA_VERSION, run_file_name, safe_name

ROWS, COLS = 4, 3


def hello(run: str = "r1", inc: str = "i1", seq: int = 0, name: str = "demo") -> Hello:
    layers = tuple(
        LayerInfo(name=f"fc{i}", kind="Linear", role="param", shape=(8, 8), params=72)
        for i in range(ROWS)
    )
    return Hello(
        run=run,
        inc=inc,
        seq=seq,
        t=100.0,
        name=name,
        layers=layers,
        columns=("a", "b", "c"),
        config={"lr": 0.1, "act": "sigmoid", "bn": False, "seed": None},
        host="box",
        pid=42,
        device="cpu",
        torch="2.x",
        every=2,
        started=99.0,
    )


def matrix(i: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) + i) * np.float32(0.5)


def step(i: int, run: str = "r1", inc: str = "i1", seq: int | None = None) -> Step:
    return Step(
        run=run,
        inc=inc,
        seq=i + 1 if seq is None else seq,
        t=100.0 + i,
        step=i * 2,
        loss=1.0 / (i + 1),
        stats=matrix(i),
        lr=0.1,
        step_time=0.01,
        throughput=math.nan,
        clipped=i % 2 == 1,
        grad_norm=float(i),
        acc=0.5,
    )


def record(path: Path, msgs: list[AnyMessage], **kw: object) -> RunRecorder:
    rec = RunRecorder(path, **kw)  # type: ignore[arg-type]
    for m in msgs:
        rec(m)
    assert rec.close(10)
    return rec


def same(a: AnyMessage, b: AnyMessage) -> bool:
    """Dataclass equality with NaN == NaN and matrices compared by value."""
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


def test_round_trip_messages_are_identical(tmp_path: Path) -> None:
    """Replay must yield what was recorded: hello, steps in seq order, end, all fields."""
    msgs: list[AnyMessage] = [hello(), *(step(i) for i in range(5))]
    msgs.append(End(run="r1", inc="i1", seq=6, t=200.0, status="crashed", reason="nan", step=8))
    rec = record(tmp_path / "a.sqlite", msgs)
    assert rec.committed == len(msgs) and rec.dropped == 0 and rec.error is None
    with open_recording(tmp_path / "a.sqlite") as r:
        (run,) = r.runs
        assert (run.run, run.inc, run.name, run.steps, run.shape) == ("r1", "i1", "demo", 5, (4, 3))
        back = list(run.messages())
    assert len(back) == len(msgs)
    assert all(same(a, b) for a, b in zip(back, msgs, strict=True))


def test_nan_and_inf_scalars_survive(tmp_path: Path) -> None:
    """SQLite stores NaN as NULL: the reader must turn it back into NaN, and keep Inf."""
    s = Step(run="r1", seq=1, t=1.0, step=0, loss=math.inf, stats=matrix(0), grad_norm=math.nan)
    record(tmp_path / "a.sqlite", [hello(inc=""), s])
    with open_recording(tmp_path / "a.sqlite") as r:
        sc = r.runs[0].scalars()
        (back,) = [m for m in r.runs[0].messages() if isinstance(m, Step)]
    assert math.isinf(sc["loss"][0]) and math.isnan(sc["grad_norm"][0])
    assert math.isinf(back.loss) and math.isnan(back.grad_norm) and math.isnan(back.lr)


def test_scalars_types_and_order(tmp_path: Path) -> None:
    """scalars() is ordered by step with exact integer step/seq and a boolean clipped flag."""
    record(tmp_path / "a.sqlite", [hello(), *(step(i) for i in (3, 0, 2, 1))])
    with open_recording(tmp_path / "a.sqlite") as r:
        sc = r.runs[0].scalars()
    assert sc["step"].dtype == np.int64 and sc["step"].tolist() == [0, 2, 4, 6]
    assert sc["seq"].tolist() == [1, 2, 3, 4]
    assert sc["clipped"].dtype == np.bool_ and sc["clipped"].tolist() == [False, True, False, True]
    assert sc["loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25]


def test_stats_tail_and_overview(tmp_path: Path) -> None:
    """Range, latest-N and evenly spread reads return the right steps and matrices."""
    record(tmp_path / "a.sqlite", [hello(), *(step(i) for i in range(100))])
    with open_recording(tmp_path / "a.sqlite") as r:
        run = r.runs[0]
        steps, stack = run.stats(10, 20)
        assert steps.tolist() == [10, 12, 14, 16, 18]
        assert stack.dtype == np.float32 and stack.shape == (5, ROWS, COLS)
        assert np.array_equal(stack[0], matrix(5))
        steps, stack = run.tail(3)
        assert steps.tolist() == [194, 196, 198] and np.array_equal(stack[-1], matrix(99))
        steps, stack = run.overview(10)
        assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 198
        assert np.all(np.diff(steps) > 0) and np.all(np.diff(steps) <= 24)
        assert np.array_equal(stack[3], matrix(int(steps[3]) // 2))
        assert len(run.overview(1000)[0]) == 100
        assert run.overview(0)[1].shape == (0, ROWS, COLS)


def test_duplicate_seq_is_recorded_once(tmp_path: Path) -> None:
    """History replayed after live data (same seq twice) must not duplicate steps."""
    rec = record(tmp_path / "a.sqlite", [hello(), step(0), step(1), step(0), step(1)])
    assert rec.committed == 5
    with open_recording(tmp_path / "a.sqlite") as r:
        assert r.runs[0].steps == 2
        assert len(list(r.runs[0].messages())) == 3


def test_shape_change_is_rejected_and_counted(tmp_path: Path) -> None:
    """A run's matrices must stack: a step of another shape is refused, not stored."""
    odd = Step(run="r1", inc="i1", seq=9, t=1.0, step=99, loss=0.0, stats=matrix(0, 5, 3))
    rec = record(tmp_path / "a.sqlite", [hello(), step(0), odd, step(1)])
    assert rec.rejected == 1
    with open_recording(tmp_path / "a.sqlite") as r:
        assert r.runs[0].stats()[0].tolist() == [0, 2]


def test_steps_before_hello_then_hello(tmp_path: Path) -> None:
    """A late joiner sees steps first: they are kept and the later hello fills the run in."""
    path = tmp_path / "a.sqlite"
    record(path, [step(0)])
    with open_recording(path) as r:
        assert r.runs[0].hello is None and r.runs[0].name == "r1" and r.runs[0].steps == 1
    record(path, [hello(seq=5), step(5)])  # appending to an existing file
    with open_recording(path) as r:
        (run,) = r.runs
        assert run.hello is not None and run.hello.name == "demo" and run.steps == 2


def test_runs_and_incarnations_are_separate(tmp_path: Path) -> None:
    """One file holds several runs; a restarted run (new inc) gets its own seq space."""
    msgs: list[AnyMessage] = [hello("a", "1"), hello("b", "1", name="other"), hello("a", "2")]
    msgs += [step(0, "a", "1"), step(0, "b", "1"), step(0, "a", "2"), step(1, "a", "2")]
    record(tmp_path / "a.sqlite", msgs)
    with open_recording(tmp_path / "a.sqlite") as r:
        got = sorted((run.run, run.inc, run.steps) for run in r.runs)
        assert got == [("a", "1", 1), ("a", "2", 2), ("b", "1", 1)]
        assert r.run("other").run == "b"
        with pytest.raises(RecordingError, match="several runs"):
            r.run("a")
        with pytest.raises(RecordingError, match="no run matching 'zz'"):
            r.run("zz")


def test_gaps_show_lost_sequence_numbers(tmp_path: Path) -> None:
    """Messages lost on the wire must be visible as seq gaps; heartbeats fill seq too."""
    beat = Heartbeat(run="r1", inc="i1", seq=3, t=1.0, step=2)
    msgs: list[AnyMessage] = [hello(), step(0), step(1), beat, step(3, seq=4), step(7, seq=8)]
    record(tmp_path / "a.sqlite", msgs)
    with open_recording(tmp_path / "a.sqlite") as r:
        run = r.runs[0]
        assert run.gaps() == [(5, 7)]
        kinds = [m.kind for m in run.messages(heartbeats=True)]
        assert kinds == ["hello", "step", "step", "heartbeat", "step", "step"]


def test_directory_mode_one_file_per_run(tmp_path: Path) -> None:
    """A directory target writes <stamp>-<name>-<run>.sqlite per run, names made safe."""
    out = tmp_path / "runs"
    rec = record(out, [hello("r1", name="../../etc/x y"), step(0), hello("r2"), step(0, "r2")])
    names = sorted(p.name for p in out.glob("*.sqlite"))
    assert len(names) == 2 and sorted(rec.paths) == sorted(out.glob("*.sqlite"))
    assert names[0].endswith("-etc_x_y-r1.sqlite") or names[1].endswith("-etc_x_y-r1.sqlite")
    with open_recording(out) as r:
        assert sorted(run.run for run in r.runs) == ["r1", "r2"]


def test_run_file_name_format() -> None:
    """The default file name is <YYYYmmdd-HHMMSS>-<name>-<run>.sqlite and filename safe."""
    assert run_file_name("deep net", "abc", when=0.0).endswith("-deep_net-abc.sqlite")
    assert len(run_file_name("x", "y", when=0.0).split("-")[0]) == 8
    assert safe_name("../..") == "run" and "/" not in safe_name("a/b")


def test_queue_full_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    """A full queue must drop (and count) new messages, never block the caller."""
    rec = RunRecorder(tmp_path / "a.sqlite", max_queue=5, batch_seconds=60, batch_messages=1000)
    msgs: list[AnyMessage] = [hello(), *(step(i) for i in range(9))]
    for m in msgs:
        rec(m)
    assert (rec.enqueued, rec.dropped, rec.committed) == (5, 5, 0)
    assert rec.close(10)
    assert rec.committed == 5
    rec(step(50))
    assert rec.dropped == 6  # closed: refused, counted


def test_committed_counts_only_after_commit(tmp_path: Path) -> None:
    """on_commit reports committed totals that the file already holds."""
    seen: list[tuple[int, int]] = []
    path = tmp_path / "a.sqlite"

    def check(n: int) -> None:
        con = sqlite3.connect(path)
        seen.append((n, con.execute("SELECT count(*) FROM steps").fetchone()[0]))
        con.close()

    rec = RunRecorder(path, batch_messages=10, batch_seconds=0.01, on_commit=check)
    rec(hello())
    for i in range(35):
        rec(step(i))
    assert rec.close(10)
    assert seen and seen[-1] == (36, 35)
    assert all(steps >= n - 1 for n, steps in seen)  # n counts the hello too


def test_unwritable_directory_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A path that cannot be created must warn once and swallow messages, not raise."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="gradtui.record"):
        rec = RunRecorder(blocker / "sub" / "a.sqlite", batch_seconds=0.01)
        for i in range(50):
            rec(step(i))
        assert rec.close(10)
    assert rec.error is not None and rec.committed == 0
    warnings = [r for r in caplog.records if r.name == "gradtui.record"]
    assert len(warnings) == 1 and "stopped" in warnings[0].getMessage()


def test_disk_full_warns_once_and_stops_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """'database or disk is full' must stop recording with one warning; earlier data stays."""
    path = tmp_path / "a.sqlite"
    with caplog.at_level(logging.WARNING, logger="gradtui.record"):
        rec = RunRecorder(path, max_bytes=256 * 1024, batch_messages=20, batch_seconds=0.01)
        rec(hello())
        for i in range(3000):
            rec(step(i))
        assert rec.close(10)
        rec(step(5000))  # after the failure: still no exception
    assert rec.error is not None and "full" in rec.error
    assert 0 < rec.committed < 3001 and rec.dropped >= 1
    assert len([r for r in caplog.records if r.name == "gradtui.record"]) == 1
    with open_recording(path) as r:
        assert r.runs[0].steps == rec.committed - 1


def test_not_a_recording_sqlite_file_is_refused_by_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The recorder must not write its tables into someone else's SQLite database."""
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with caplog.at_level(logging.WARNING, logger="gradtui.record"):
        rec = record(path, [hello()])
    assert rec.error is not None and "not a gradtui recording" in rec.error
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["t"]
    con.close()


def test_reader_errors_are_one_line(tmp_path: Path) -> None:
    """Missing, non-SQLite, foreign SQLite, newer-schema and empty-dir inputs give clear errors."""
    with pytest.raises(RecordingError, match="no such recording"):
        open_recording(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"hello world, definitely not sqlite" * 10)
    with pytest.raises(RecordingError, match="not an SQLite file"):
        open_recording(junk)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(RecordingError, match="not a gradtui recording"):
        open_recording(foreign)
    newer = tmp_path / "newer.sqlite"
    record(newer, [hello()])
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RecordingError, match=r"schema version 2.*upgrade gradtui") as info:
        open_recording(newer)
    assert "\n" not in str(info.value) and info.value.code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordingError, match="no recordings"):
        open_recording(empty)


def test_recorder_never_blocks_a_producer_while_writer_is_busy(tmp_path: Path) -> None:
    """Enqueueing from another thread while commits run must neither lose nor block data."""
    rec = RunRecorder(tmp_path / "a.sqlite", batch_messages=50, batch_seconds=0.01)
    rec(hello())

    def produce() -> None:
        for i in range(2000):
            rec(step(i))

    t = threading.Thread(target=produce)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert rec.close(30)
    assert rec.committed + rec.dropped == 2001 and rec.dropped == 0


def test_name_hint_names_file_when_steps_come_first(tmp_path: Path) -> None:
    """A late joiner's first message is a step: the registry's name must still name the file."""
    rec = RunRecorder(tmp_path / "runs")
    rec.hint_name("r1", "from registry")
    rec(step(0))
    rec(hello())
    assert rec.close(10)
    (path,) = rec.paths
    assert path.name.endswith("-from_registry-r1.sqlite")


def test_target_kind_file_or_directory(tmp_path: Path) -> None:
    """Existing files (even without a suffix) are files; new suffix-less paths are dirs."""
    existing = tmp_path / "plainfile"
    record(existing, [hello()])  # new path, no suffix: a directory
    assert existing.is_dir() and len(list(existing.glob("*.sqlite"))) == 1
    named = tmp_path / "rec.db"
    rec = record(named, [hello()])
    assert rec.paths == [named] and not rec.directory_mode
    again = record(named.rename(tmp_path / "nosuffix"), [step(0)])
    assert not again.directory_mode and again.error is None
    with open_recording(tmp_path / "nosuffix") as r:
        assert r.runs[0].steps == 1


def test_queue_bytes_bound_drops_big_matrices(tmp_path: Path) -> None:
    """Memory stays bounded by bytes too: matrices beyond max_queue_bytes are dropped."""
    one = matrix(0).nbytes
    rec = RunRecorder(
        tmp_path / "a.sqlite", max_queue_bytes=3 * one, batch_seconds=60, batch_messages=1000
    )
    msgs: list[AnyMessage] = [hello(), *(step(i) for i in range(5))]
    for m in msgs:
        rec(m)
    assert (rec.enqueued, rec.dropped) == (4, 2)  # the hello costs no matrix bytes
    assert rec.close(10) and rec.committed == 4


def test_reader_works_from_another_thread(tmp_path: Path) -> None:
    """A viewer opens a recording on one thread and reads it on a worker thread."""
    record(tmp_path / "a.sqlite", [hello(), step(0), step(1)])
    with open_recording(tmp_path / "a.sqlite") as r:
        got: list[int] = []
        t = threading.Thread(target=lambda: got.extend(r.runs[0].stats()[0].tolist()))
        t.start()
        t.join(10)
        assert got == [0, 2]


def test_failing_on_commit_callback_does_not_stop_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_commit is logged once; every message is still committed."""

    def boom(n: int) -> None:
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="gradtui.record"):
        rec = RunRecorder(
            tmp_path / "a.sqlite", batch_messages=2, batch_seconds=0.01, on_commit=boom
        )
        msgs: list[AnyMessage] = [hello(), step(0), step(1), step(2)]
        for m in msgs:
            rec(m)
        assert rec.close(10)
    assert rec.committed == 4 and rec.error is None
    assert len([r for r in caplog.records if "on_commit" in r.getMessage()]) == 1


def _naive_scalars(path: Path, run: str) -> dict[str, np.ndarray]:
    """The scalars straight from the steps table (reference for the packed read path)."""
    from gradtui.storage.scalars import rows_to_records
    from gradtui.storage.schema import SCALAR_COLUMNS

    con = sqlite3.connect(path)
    rows = con.execute(
        f"SELECT {', '.join(SCALAR_COLUMNS)} FROM steps JOIN runs ON runs.id = steps.run_id"
        " WHERE runs.run = ? ORDER BY step, steps.id",
        (run,),
    ).fetchall()
    con.close()
    table = rows_to_records(rows)
    return {name: table[name] for name in SCALAR_COLUMNS}


def test_packed_scalars_equal_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packed scalar chunks + unpacked rows must read exactly like the steps table, across
    interleaved runs, out-of-order steps, duplicates, NaN and a reopened (appended) file."""
    import gradtui.storage.store as store

    monkeypatch.setattr(store, "CHUNK_STEPS", 7)
    path = tmp_path / "a.sqlite"
    rng = np.random.default_rng(1)
    order = rng.permutation(60)
    msgs: list[AnyMessage] = [hello("a"), hello("b")]
    for n, i in enumerate(order):
        s = step(int(i), "a", seq=n + 1)
        if i % 5 == 0:
            s = Step(run="a", inc="i1", seq=n + 1, t=1.0, step=int(i), loss=math.nan, stats=s.stats)
        msgs += [s, step(n, "b")]
    msgs += [step(0, "a", seq=1), step(3, "b")]  # duplicate seqs: ignored
    record(path, msgs, batch_messages=13)
    record(path, [step(100 + i, "a", seq=1000 + i) for i in range(10)])  # reopen: append
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM scalar_chunks").fetchone()[0] >= 17
    con.close()
    with open_recording(path) as r:
        for run in r.runs:
            got, want = run.scalars(), _naive_scalars(path, run.run)
            assert len(got["step"]) == {"a": 70, "b": 60}[run.run]
            for name, values in want.items():
                expected = values != 0 if name == "clipped" else values
                assert np.array_equal(got[name], expected, equal_nan=True), name


def _wait_committed(rec: RunRecorder, n: int) -> None:
    deadline = time.monotonic() + 10
    while rec.committed < n:
        assert time.monotonic() < deadline and rec.error is None, rec.error
        time.sleep(0.005)


def test_two_writers_on_one_run_never_pack_a_row_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two recorders appending the same run to one file (a trainer's own and `gradtui
    record -o`) must neither fail nor pack a row twice when each packs a chunk."""
    import gradtui.storage.store as store

    monkeypatch.setattr(store, "CHUNK_STEPS", 5)
    path = tmp_path / "a.sqlite"
    one = RunRecorder(path, batch_messages=1, batch_seconds=0.01)
    two = RunRecorder(path, batch_messages=1, batch_seconds=0.01)
    for i in range(3):
        one(step(i))
    _wait_committed(one, 3)
    for i in range(3, 6):  # two sees 3 unpacked rows + its 3: packs rows 1-5
        two(step(i))
    _wait_committed(two, 3)
    for i in range(6, 8):  # one now counts 5 of its own: a stale view would re-pack 1-5
        one(step(i))
    _wait_committed(one, 5)
    assert one.close(10) and two.close(10)
    assert one.error is None and two.error is None
    with open_recording(path) as r:
        assert r.runs[0].scalars()["step"].tolist() == [i * 2 for i in range(8)]


def test_concurrent_creation_of_one_new_file(tmp_path: Path) -> None:
    """Recorders opening the same new file at once must all succeed (atomic schema setup)."""
    path = tmp_path / "a.sqlite"
    recs = [RunRecorder(path, batch_seconds=0.01) for _ in range(4)]
    for n, rec in enumerate(recs):
        rec(step(n, run=f"r{n}"))
    assert all(rec.close(10) for rec in recs)
    assert [rec.error for rec in recs] == [None] * 4
    with open_recording(path) as r:
        assert sorted(run.run for run in r.runs) == ["r0", "r1", "r2", "r3"]


def test_directory_skips_bad_files_but_not_all(tmp_path: Path) -> None:
    """One unreadable file in a directory is skipped and reported; all bad is an error."""
    record(tmp_path / "good.sqlite", [hello(), step(0)])
    (tmp_path / "junk.sqlite").write_bytes(b"x" * 100)
    with open_recording(tmp_path) as r:
        assert [run.run for run in r.runs] == ["r1"] and r.paths == [tmp_path / "good.sqlite"]
        assert [p.name for p, _ in r.skipped] == ["junk.sqlite"]
    (tmp_path / "good.sqlite").unlink()
    with pytest.raises(RecordingError, match="no readable recording among 1 files"):
        open_recording(tmp_path)
