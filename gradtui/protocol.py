"""The wire protocol: message dataclasses, ``encode`` to frames and validating ``decode``.

Pure Python + numpy + msgpack. No sockets, no torch, no pickle. ``docs/protocol.md`` is the
normative description; this module is its reference implementation.

A message is a ZeroMQ multipart message of two or three frames:

1. topic: ``b"gt1/<run>/<kind>"`` so subscribers can filter by prefix;
2. header: a msgpack map (fields below);
3. payload (``step`` only): little-endian float32 ``rows x cols`` matrix in C order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import msgpack
import numpy as np
import numpy.typing as npt

PROTOCOL_VERSION: Final = 1
TOPIC_PREFIX: Final = b"gt1/"

# Limits that bound what a decoder will accept: memory safety against hostile peers.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
MAX_HEADER_BYTES: Final = 4 * 1024 * 1024
MAX_NAME_CHARS: Final = 256
MAX_TEXT_CHARS: Final = 4096
MAX_LAYERS: Final = 100_000
MAX_COLUMNS: Final = 64
MAX_CONFIG_ITEMS: Final = 512

Kind: TypeAlias = Literal["hello", "step", "heartbeat", "end"]
KINDS: Final[tuple[Kind, ...]] = ("hello", "step", "heartbeat", "end")
EndStatus: TypeAlias = Literal["finished", "interrupted", "crashed"]
END_STATUSES: Final[tuple[EndStatus, ...]] = ("finished", "interrupted", "crashed")
ConfigValue: TypeAlias = str | int | float | bool | None

# The default statistic columns published by the probe, in payload column order.
# NaN means "not applicable to this row" (e.g. activation stats on a Linear row).
COLUMNS: Final[tuple[str, ...]] = (
    "grad_norm",  # L2 norm of all parameter gradients of the module
    "grad_rms",  # grad_norm / sqrt(number of gradient elements)
    "grad_max",  # max |g|
    "grad_nonfinite",  # count of NaN/Inf gradient entries
    "out_grad_norm",  # L2 norm of dLoss/d(module output): the back-propagated signal
    "weight_norm",  # L2 norm of all parameters of the module
    "update_ratio",  # ||w_after - w_before|| / ||w_before|| across the optimiser step
    "act_mean",  # mean of the module's output
    "act_std",  # std of the module's output
    "act_saturated",  # fraction of sigmoid/tanh outputs within a margin of their bounds
    "act_dead",  # fraction of ReLU units that are zero for the whole batch
)

Frames: TypeAlias = list[bytes]
Matrix: TypeAlias = npt.NDArray[np.float32]


class ProtocolError(ValueError):
    """A frame sequence that is not a valid gradtui message. The one error type decode raises."""


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One watched row of the stats matrix."""

    name: str
    """Module path, e.g. ``blocks.3.fc``; activation rows use the activation module's path."""
    kind: str
    """Module class name, e.g. ``Linear``, ``Sigmoid``."""
    role: Literal["param", "act"]
    """``param``: a module owning parameters; ``act``: an activation module."""
    shape: tuple[int, ...] = ()
    """Shape of the module's main weight (empty for activations)."""
    params: int = 0
    """Number of parameter elements the module owns directly."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Fields every message carries (the envelope)."""

    run: str
    """Run id: stable for one training run (``[A-Za-z0-9._-]``, at most 64 chars)."""
    inc: str = ""
    """Incarnation: random per publisher process start; a change means a restarted run."""
    seq: int = 0
    """Per-(run, incarnation) sequence number over all kinds, from 0, for gap detection."""
    t: float = 0.0
    """Sender wall-clock time, seconds since the Unix epoch."""

    kind: Kind = field(init=False, default="hello")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Message):
    """The run's schema and metadata; re-sent periodically so late viewers learn it."""

    name: str
    layers: tuple[LayerInfo, ...]
    columns: tuple[str, ...] = COLUMNS
    config: Mapping[str, ConfigValue] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    device: str = ""
    torch: str = ""
    every: int = 1
    started: float = 0.0
    snapshot: str = ""
    """Endpoint of the run's history (snapshot) service for late joiners; empty if none."""

    kind: Kind = field(init=False, default="hello")


@dataclass(frozen=True, slots=True, kw_only=True)
class Step(Message):
    """One published training step with its stats matrix."""

    step: int
    loss: float
    stats: Matrix
    """``float32[len(layers), len(columns)]`` in the hello's row and column order."""
    lr: float = math.nan
    step_time: float = math.nan
    """Seconds of wall time per training step (averaged since the last published step)."""
    throughput: float = math.nan
    """Samples per second."""
    clipped: bool = False
    grad_norm: float = math.nan
    """Total gradient L2 norm over all parameters (before clipping)."""
    acc: float = math.nan
    """Training accuracy of the batch, if the loop provides one."""

    kind: Kind = field(init=False, default="step")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    """Sent when no step was published for a while; tells a quiet run from a dead one."""

    step: int = -1
    """Last step number published, -1 before the first."""
    phase: str = "train"
    """What the run is doing, e.g. ``train`` or ``eval`` (an idle run is not a dead one)."""

    kind: Kind = field(init=False, default="heartbeat")


@dataclass(frozen=True, slots=True, kw_only=True)
class End(Message):
    """The run's last message."""

    status: EndStatus
    reason: str = ""
    step: int = -1

    kind: Kind = field(init=False, default="end")


AnyMessage: TypeAlias = Hello | Step | Heartbeat | End


def end_status(exc: BaseException | None) -> tuple[EndStatus, str]:
    """How a run that stopped with ``exc`` (None: normally) ends on the wire."""
    if exc is None:
        return "finished", ""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt"
    first_line = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0]
    return "crashed", first_line[:MAX_TEXT_CHARS]


# --------------------------------------------------------------------------- encoding


def topic(run: str, kind: Kind) -> bytes:
    """The topic frame for a run's message of ``kind``."""
    return TOPIC_PREFIX + run.encode() + b"/" + kind.encode()


def _envelope(msg: Message) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "kind": msg.kind,
        "run": msg.run,
        "inc": msg.inc,
        "seq": msg.seq,
        "t": msg.t,
    }


def encode(msg: AnyMessage) -> Frames:
    """Encode a message to its frames (topic, header[, payload])."""
    head = _envelope(msg)
    if isinstance(msg, Hello):
        head.update(
            name=msg.name,
            layers=[[li.name, li.kind, li.role, list(li.shape), li.params] for li in msg.layers],
            columns=list(msg.columns),
            config=dict(msg.config),
            host=msg.host,
            pid=msg.pid,
            device=msg.device,
            torch=msg.torch,
            every=msg.every,
            started=msg.started,
            snapshot=msg.snapshot,
        )
    elif isinstance(msg, Step):
        stats = np.ascontiguousarray(msg.stats, dtype="<f4")
        if stats.ndim != 2:
            raise ProtocolError(f"stats must be 2-D, got shape {stats.shape}")
        head.update(
            step=msg.step,
            loss=float(msg.loss),
            lr=float(msg.lr),
            step_time=float(msg.step_time),
            throughput=float(msg.throughput),
            clipped=bool(msg.clipped),
            grad_norm=float(msg.grad_norm),
            acc=float(msg.acc),
            rows=int(stats.shape[0]),
            cols=int(stats.shape[1]),
        )
        return [topic(msg.run, "step"), msgpack.packb(head), stats.tobytes()]
    elif isinstance(msg, Heartbeat):
        head.update(step=msg.step, phase=msg.phase)
    elif isinstance(msg, End):
        head.update(status=msg.status, reason=msg.reason, step=msg.step)
    else:  # pragma: no cover - exhaustive over AnyMessage
        raise ProtocolError(f"cannot encode {type(msg).__name__}")
    return [topic(msg.run, msg.kind), msgpack.packb(head)]


# --------------------------------------------------------------------------- decoding


def _get(
    head: Mapping[str, Any], key: str, typ: type | tuple[type, ...], default: Any = ...
) -> Any:
    if key not in head:
        if default is ...:
            raise ProtocolError(f"header field {key!r} missing")
        return default
    value = head[key]
    # bool is an int subclass; a bool where a number is wanted is still a type error.
    if isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise ProtocolError(f"header field {key!r} has type bool")
    if not isinstance(value, typ):
        raise ProtocolError(f"header field {key!r} has type {type(value).__name__}")
    return value


def _text(head: Mapping[str, Any], key: str, limit: int, default: Any = ...) -> str:
    value: str = _get(head, key, str, default)
    if len(value) > limit:
        raise ProtocolError(f"header field {key!r} longer than {limit} chars")
    return value


def _int(head: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = ...) -> int:
    value: int = _get(head, key, int, default)
    if not lo <= value <= hi:
        raise ProtocolError(f"header field {key!r}={value} out of range [{lo}, {hi}]")
    return value


def _float(head: Mapping[str, Any], key: str, default: Any = ...) -> float:
    return float(_get(head, key, (int, float), default))


_RUN_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_run_id(run: str) -> bool:
    """Run ids are short and filename/topic safe."""
    return 0 < len(run) <= 64 and set(run) <= _RUN_CHARS


def _layers(raw: Any) -> tuple[LayerInfo, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_LAYERS:
        raise ProtocolError(f"header field 'layers' must be a list of at most {MAX_LAYERS}")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5):
            raise ProtocolError("each layer must be [name, kind, role, shape, params]")
        name, kind, role, shape, params = item
        if not (isinstance(name, str) and isinstance(kind, str)) or len(name) > MAX_TEXT_CHARS:
            raise ProtocolError("layer name/kind must be strings")
        if len(kind) > MAX_NAME_CHARS or role not in ("param", "act"):
            raise ProtocolError(f"bad layer kind/role {kind!r}/{role!r}")
        if not (
            isinstance(shape, list)
            and len(shape) <= 8
            and all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
            )
        ):
            raise ProtocolError("layer shape must be a list of at most 8 non-negative ints")
        if not isinstance(params, int) or isinstance(params, bool) or not 0 <= params < 2**48:
            raise ProtocolError("layer params must be a non-negative int")
        out.append(LayerInfo(name=name, kind=kind, role=role, shape=tuple(shape), params=params))
    return tuple(out)


def _config(raw: Any) -> dict[str, ConfigValue]:
    if not isinstance(raw, dict) or len(raw) > MAX_CONFIG_ITEMS:
        raise ProtocolError(f"header field 'config' must be a map of at most {MAX_CONFIG_ITEMS}")
    out: dict[str, ConfigValue] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or len(key) > MAX_NAME_CHARS:
            raise ProtocolError("config keys must be short strings")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ProtocolError(f"config value for {key!r} must be a scalar")
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ProtocolError(f"config value for {key!r} too long")
        out[key] = value
    return out


def decode(frames: Sequence[bytes | memoryview]) -> AnyMessage:
    """Decode and validate one multipart message.

    Args:
        frames: the frames as received (bytes, or buffers for zero-copy payloads).

    Returns:
        The decoded message. A step's ``stats`` is a read-only view on the payload frame.

    Raises:
        ProtocolError: anything malformed: frame count, sizes, types, ranges or version.
    """
    if not 2 <= len(frames) <= 3:
        raise ProtocolError(f"expected 2 or 3 frames, got {len(frames)}")
    top, raw_head = bytes(frames[0]), frames[1]
    if not top.startswith(TOPIC_PREFIX):
        raise ProtocolError(f"topic does not start with {TOPIC_PREFIX!r}")
    if len(raw_head) > MAX_HEADER_BYTES:
        raise ProtocolError("header too large")
    try:
        head = msgpack.unpackb(bytes(raw_head), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(head, dict):
        raise ProtocolError("header is not a map")
    version = _get(head, "v", int)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version}")
    kind = _get(head, "kind", str)
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind[:32]!r}")
    run = _get(head, "run", str)
    if not valid_run_id(run):
        raise ProtocolError("invalid run id")
    if top != topic(run, kind):
        raise ProtocolError("topic does not match header")
    env = {
        "run": run,
        "inc": _text(head, "inc", 64, ""),
        "seq": _int(head, "seq", 0, 2**63 - 1),
        "t": _float(head, "t"),
    }
    has_payload = len(frames) == 3
    if has_payload != (kind == "step"):
        raise ProtocolError(f"{kind} message with wrong frame count {len(frames)}")

    if kind == "hello":
        columns = _get(head, "columns", list)
        if len(columns) > MAX_COLUMNS or not all(
            isinstance(c, str) and 0 < len(c) <= MAX_NAME_CHARS for c in columns
        ):
            raise ProtocolError("header field 'columns' must list short strings")
        return Hello(
            **env,
            name=_text(head, "name", MAX_NAME_CHARS),
            layers=_layers(head.get("layers")),
            columns=tuple(columns),
            config=_config(head.get("config", {})),
            host=_text(head, "host", MAX_NAME_CHARS, ""),
            pid=_int(head, "pid", 0, 2**31 - 1, 0),
            device=_text(head, "device", MAX_NAME_CHARS, ""),
            torch=_text(head, "torch", MAX_NAME_CHARS, ""),
            every=_int(head, "every", 1, 2**31 - 1, 1),
            started=_float(head, "started", 0.0),
            snapshot=_text(head, "snapshot", MAX_TEXT_CHARS, ""),
        )
    if kind == "step":
        rows = _int(head, "rows", 0, MAX_LAYERS)
        cols = _int(head, "cols", 0, MAX_COLUMNS)
        payload = frames[2]
        if len(payload) != rows * cols * 4:
            raise ProtocolError(f"payload is {len(payload)} bytes, expected {rows}x{cols}x4")
        stats = np.frombuffer(payload, dtype="<f4").reshape(rows, cols)
        return Step(
            **env,
            step=_int(head, "step", 0, 2**63 - 1),
            loss=_float(head, "loss"),
            stats=stats,
            lr=_float(head, "lr", math.nan),
            step_time=_float(head, "step_time", math.nan),
            throughput=_float(head, "throughput", math.nan),
            clipped=_get(head, "clipped", bool, False),
            grad_norm=_float(head, "grad_norm", math.nan),
            acc=_float(head, "acc", math.nan),
        )
    if kind == "heartbeat":
        return Heartbeat(
            **env,
            step=_int(head, "step", -1, 2**63 - 1, -1),
            phase=_text(head, "phase", MAX_NAME_CHARS, "train"),
        )
    status = _get(head, "status", str)
    if status not in END_STATUSES:
        raise ProtocolError(f"unknown end status {status[:32]!r}")
    return End(
        **env,
        status=status,
        reason=_text(head, "reason", MAX_TEXT_CHARS, ""),
        step=_int(head, "step", -1, 2**63 - 1, -1),
    )
