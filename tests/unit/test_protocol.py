"""The wire protocol: round trips and the rejection of every malformed case."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradtui.protocol import (
    COLUMNS,
    MAX_COLUMNS,
    MAX_HEADER_BYTES,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    AnyMessage,
    End,
    Heartbeat,
    Hello,
    LayerInfo,
    ProtocolError,
    Step,
    decode,
    encode,
    topic,
    valid_run_id,
)

RUN_IDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=64,
)
ENVELOPE = {
    "run": RUN_IDS,
    "inc": st.text(alphabet="0123456789abcdef", max_size=16),
    "seq": st.integers(0, 2**63 - 1),
    "t": st.floats(allow_nan=False, allow_infinity=False),
}
NAMES = st.text(max_size=40)
LAYERS = st.lists(
    st.builds(
        LayerInfo,
        name=NAMES,
        kind=st.text(max_size=20),
        role=st.sampled_from(["param", "act"]),
        shape=st.lists(st.integers(0, 4096), max_size=4).map(tuple),
        params=st.integers(0, 2**40),
    ),
    max_size=6,
)
CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
)


def _layers(n: int) -> tuple[LayerInfo, ...]:
    return tuple(LayerInfo(name=f"l{i}", kind="Linear", role="param") for i in range(n))


def _step(**kw: Any) -> Step:
    base: dict[str, Any] = {
        "run": "r1",
        "seq": 3,
        "t": 1.5,
        "step": 7,
        "loss": 0.25,
        "stats": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    base.update(kw)
    return Step(**base)


def _hello(**kw: Any) -> Hello:
    base: dict[str, Any] = {"run": "r1", "name": "n", "layers": _layers(2), "columns": COLUMNS}
    base.update(kw)
    return Hello(**base)


def _end() -> End:
    return End(run="r1", status="finished")


def _patched(msg: AnyMessage, **fields: Any) -> list[bytes]:
    """Encode ``msg``, then overwrite header fields: the way a hostile peer would."""
    frames = encode(msg)
    head = msgpack.unpackb(frames[1])
    head.update(fields)
    return [frames[0], msgpack.packb(head), *frames[2:]]


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None)
@given(
    env=st.fixed_dictionaries(ENVELOPE),
    name=st.text(max_size=MAX_NAME_CHARS),
    layers=LAYERS,
    columns=st.lists(st.text(min_size=1, max_size=20), max_size=MAX_COLUMNS).map(tuple),
    config=st.dictionaries(st.text(max_size=20), CONFIG_VALUES, max_size=8),
    every=st.integers(1, 1000),
)
def test_hello_round_trip(
    env: dict[str, Any],
    name: str,
    layers: list[LayerInfo],
    columns: tuple[str, ...],
    config: dict[str, Any],
    every: int,
) -> None:
    """Guards: any valid hello (unicode names, big ints, config scalars) decodes to itself."""
    msg = Hello(**env, name=name, layers=tuple(layers), columns=columns, config=config, every=every)
    assert decode(encode(msg)) == msg


@settings(max_examples=60, deadline=None)
@given(
    env=st.fixed_dictionaries(ENVELOPE),
    step=st.integers(0, 2**63 - 1),
    loss=st.floats(),
    rows=st.integers(0, 5),
    cols=st.integers(0, 6),
    data=st.data(),
    clipped=st.booleans(),
)
def test_step_round_trip(
    env: dict[str, Any],
    step: int,
    loss: float,
    rows: int,
    cols: int,
    data: st.DataObject,
    clipped: bool,
) -> None:
    """Guards: step header and float32 payload (NaN/Inf included) survive bit-exactly."""
    values = data.draw(st.lists(st.floats(width=32), min_size=rows * cols, max_size=rows * cols))
    stats = np.array(values, dtype=np.float32).reshape(rows, cols)
    got = decode(encode(Step(**env, step=step, loss=loss, stats=stats, clipped=clipped)))
    assert isinstance(got, Step)
    assert got.stats.dtype == np.dtype("<f4") and got.stats.shape == (rows, cols)
    assert got.stats.tobytes() == stats.tobytes()
    assert (got.step, got.clipped, got.seq, got.run) == (step, clipped, env["seq"], env["run"])
    assert got.loss == loss or (math.isnan(got.loss) and math.isnan(loss))


@given(env=st.fixed_dictionaries(ENVELOPE), step=st.integers(-1, 2**40), phase=st.text(max_size=9))
def test_heartbeat_round_trip(env: dict[str, Any], step: int, phase: str) -> None:
    """Guards: heartbeat step (including -1 = none yet) and phase round-trip."""
    msg = Heartbeat(**env, step=step, phase=phase)
    assert decode(encode(msg)) == msg


@given(
    env=st.fixed_dictionaries(ENVELOPE),
    status=st.sampled_from(["finished", "interrupted", "crashed"]),
    reason=st.text(max_size=200),
)
def test_end_round_trip(env: dict[str, Any], status: Any, reason: str) -> None:
    """Guards: every end status and a unicode reason round-trip."""
    msg = End(**env, status=status, reason=reason, step=5)
    assert decode(encode(msg)) == msg


def test_step_payload_is_little_endian_c_order() -> None:
    """Guards: the documented payload layout (docs/protocol.md) matches what encode writes."""
    stats = np.array([[1.0, 2.0], [3.0, -np.inf]], dtype=np.float32)
    frames = encode(_step(stats=stats))
    assert frames[0] == b"gt1/r1/step"
    assert frames[2] == np.array([1.0, 2.0, 3.0, -np.inf], dtype="<f4").tobytes()
    head = msgpack.unpackb(frames[1])
    assert (head["v"], head["kind"], head["rows"], head["cols"]) == (PROTOCOL_VERSION, "step", 2, 2)


def test_nan_payload_is_allowed() -> None:
    """Guards: exploding runs must still be delivered; NaN stats are data, not malformation."""
    stats = np.full((2, 3), np.nan, dtype=np.float32)
    got = decode(encode(_step(stats=stats, loss=math.nan, grad_norm=math.inf)))
    assert isinstance(got, Step)
    assert np.isnan(got.stats).all() and math.isnan(got.loss) and got.grad_norm == math.inf


def test_decode_accepts_memoryview_frames() -> None:
    """Guards: zero-copy receive (buffers instead of bytes) decodes the same."""
    frames = encode(_step())
    got = decode([memoryview(f) for f in frames])
    assert isinstance(got, Step) and got.stats[1, 2] == 5.0


# --------------------------------------------------------------------------- rejection


def _head(frames: list[bytes], drop: str = "") -> dict[str, Any]:
    head: dict[str, Any] = msgpack.unpackb(frames[1])
    head.pop(drop, None)
    return head


def _bad_cases() -> list[tuple[str, list[bytes]]]:
    step, hello = _step(), _hello()
    sf, hf = encode(step), encode(hello)
    end = encode(End(run="r1", status="finished"))
    long_text = "x" * (MAX_TEXT_CHARS + 1)
    return [
        ("no frames", []),
        ("one frame", sf[:1]),
        ("four frames", [*sf, b""]),
        ("step without payload", sf[:2]),
        ("hello with a payload", [*hf, b"\0" * 4]),
        ("bad msgpack", [sf[0], b"\xc1\xc1\xc1", sf[2]]),
        ("truncated msgpack", [sf[0], sf[1][:-3], sf[2]]),
        ("header not a map", [sf[0], msgpack.packb([1, 2]), sf[2]]),
        ("wrong topic prefix", [b"gt2/r1/step", sf[1], sf[2]]),
        ("topic kind mismatch", [b"gt1/r1/hello", sf[1], sf[2]]),
        ("topic run mismatch", [b"gt1/r2/step", sf[1], sf[2]]),
        ("wrong version", _patched(step, v=PROTOCOL_VERSION + 1)),
        ("version missing", [sf[0], msgpack.packb({"kind": "step", "run": "r1"}), sf[2]]),
        ("unknown kind", [b"gt1/r1/nope", *_patched(step, kind="nope")[1:]]),
        ("invalid run id", [b"gt1/a b/step", *_patched(step, run="a b")[1:]]),
        ("payload too short", [sf[0], sf[1], sf[2][:-4]]),
        ("payload too long", [sf[0], sf[1], sf[2] + b"\0\0\0\0"]),
        ("rows lie", _patched(step, rows=3)),
        ("bool for int seq", _patched(step, seq=True)),
        ("bool for int step", _patched(step, step=False)),
        ("bool for float loss", _patched(step, loss=True)),
        ("string for float", _patched(step, loss="0.5")),
        ("negative seq", _patched(step, seq=-1)),
        ("seq beyond int64", _patched(step, seq=2**63)),
        ("too many columns", _patched(step, cols=MAX_COLUMNS + 1)),
        ("clipped not bool", _patched(step, clipped=1)),
        ("oversize name", _patched(hello, name="x" * (MAX_NAME_CHARS + 1))),
        ("oversize layer name", _patched(hello, layers=[[long_text, "L", "param", [], 0]])),
        ("oversize column name", _patched(hello, columns=["c" * (MAX_NAME_CHARS + 1)])),
        ("empty column name", _patched(hello, columns=[""])),
        ("too many columns in hello", _patched(hello, columns=["c"] * (MAX_COLUMNS + 1))),
        ("layer not a list", _patched(hello, layers=[{"name": "x"}])),
        ("layer bad role", _patched(hello, layers=[["x", "L", "weird", [], 0]])),
        ("layer bool params", _patched(hello, layers=[["x", "L", "param", [], True]])),
        ("layer negative dim", _patched(hello, layers=[["x", "L", "param", [-1], 0]])),
        ("config nested value", _patched(hello, config={"a": [1, 2]})),
        ("config non-string key", [hf[0], msgpack.packb({**_head(hf), "config": {1: 2}})]),
        ("pid bool", _patched(hello, pid=True)),
        ("every zero", _patched(hello, every=0)),
        ("unknown end status", _patched(End(run="r1", status="finished"), status="exploded")),
        ("oversize end reason", _patched(End(run="r1", status="crashed"), reason=long_text)),
        ("end without status", [end[0], msgpack.packb(_head(end, drop="status"))]),
        ("step without loss", [sf[0], msgpack.packb(_head(sf, drop="loss")), sf[2]]),
        ("header too large", [sf[0], b"\x80" + b"\0" * MAX_HEADER_BYTES, sf[2]]),
    ]  # fmt: skip


@pytest.mark.parametrize(("label", "frames"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_decode_rejects(label: str, frames: list[bytes]) -> None:
    """Guards: each malformed input raises ProtocolError (never another type, never accepted)."""
    with pytest.raises(ProtocolError):
        decode(frames)


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_decode_garbage_raises_only_protocol_error(frames: list[bytes]) -> None:
    """Guards: arbitrary bytes never crash a viewer with an unexpected exception type."""
    with contextlib.suppress(ProtocolError):
        decode(frames)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mutated_header_raises_only_protocol_error(data: st.DataObject) -> None:
    """Guards: a valid message with one header field replaced by junk fails cleanly."""
    makers: list[Callable[[], AnyMessage]] = [_step, _hello, _end]
    msg = data.draw(st.sampled_from(makers))()
    frames = encode(msg)
    head = msgpack.unpackb(frames[1])
    key = data.draw(st.sampled_from(sorted(head)))
    head[key] = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**64 - 1),
            st.floats(),
            st.text(max_size=5),
            st.lists(st.integers(-5, 5), max_size=3),
            st.binary(max_size=4),
        )
    )
    with contextlib.suppress(ProtocolError):
        decode([frames[0], msgpack.packb(head), *frames[2:]])


def test_valid_run_id() -> None:
    """Guards: run ids stay filename- and topic-safe (no slash, space, dotless limits)."""
    assert valid_run_id("run-1.a_B")
    assert not valid_run_id("")
    assert not valid_run_id("a/b")
    assert not valid_run_id("x" * 65)
    assert topic("r", "end") == b"gt1/r/end"


def test_end_status_maps_how_a_run_stopped() -> None:
    """Guards the shared exit mapping of Monitor and Publisher context managers."""
    from gradtui.protocol import MAX_TEXT_CHARS, end_status

    assert end_status(None) == ("finished", "")
    assert end_status(KeyboardInterrupt()) == ("interrupted", "KeyboardInterrupt")
    status, reason = end_status(ValueError("bad\nsecond line" + "x" * 9000))
    assert status == "crashed" and reason == "ValueError: bad"
    assert len(end_status(RuntimeError("y" * 9000))[1]) == MAX_TEXT_CHARS
