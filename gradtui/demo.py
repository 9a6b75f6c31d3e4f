"""The trainers behind ``gradtui demo``: start several as subprocesses, and stop every one of them.

Pure process management (no UI, no torch): the demo command owns a :class:`TrainerGroup` and
calls :meth:`TrainerGroup.stop` in a ``finally``, so quitting, Ctrl-C, SIGTERM/SIGHUP of the
demo and a crashing app all end the trainers. Each trainer also gets its own session (terminal
signals reach only the demo, which then stops them in order) and, on Linux, a parent-death
signal, so even ``kill -9`` of the demo leaves nothing running.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Final

from gradtui.errors import GradtuiError

DEFAULT_CONFIGS: Final[tuple[str, ...]] = (
    "--act sigmoid",
    "--act tanh",
    "--act relu",
    "--act relu --bn --residual --clip-norm 1",
)
"""The classic comparison: two saturating activations, plain ReLU, and ReLU with every remedy."""

# Flags the demo itself sets on every trainer; a config may not override them.
_RESERVED: Final = frozenset(
    {"--endpoint", "--quiet", "--steps", "--depth", "--no-record", "--record-dir"}
)
_ACTIVATIONS: Final = frozenset({"sigmoid", "tanh", "relu", "leaky_relu", "gelu"})


@dataclass(frozen=True, slots=True)
class TrainerSpec:
    """One trainer of the demo: a display label and the trainer flags that make it differ."""

    label: str
    flags: tuple[str, ...]


def parse_configs(text: str) -> list[TrainerSpec]:
    """Parse ``--configs``: trainer flag sets separated by ``;``.

    A bare activation name may lead a set (``"sigmoid; relu --bn --residual"``) as a short form
    of ``--act NAME``.

    Raises:
        GradtuiError: (code 2) empty, unparsable, more than four sets, or a reserved flag.
    """
    specs: list[TrainerSpec] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            flags = shlex.split(part)
        except ValueError as exc:
            raise GradtuiError(f"--configs: cannot parse {part!r}: {exc}", code=2) from None
        if flags and flags[0] in _ACTIVATIONS:
            flags = ["--act", *flags]
        if not flags[0].startswith("-"):
            raise GradtuiError(f"--configs: expected trainer flags, got {part!r}", code=2)
        for flag in flags:
            if flag.split("=", 1)[0] in _RESERVED:
                raise GradtuiError(f"--configs: {flag} is set by the demo itself", code=2)
        specs.append(TrainerSpec(label=_label(flags), flags=tuple(flags)))
    if not specs:
        raise GradtuiError("--configs: give at least one trainer configuration", code=2)
    if len(specs) > 4:
        raise GradtuiError(f"--configs: at most 4 trainers, got {len(specs)}", code=2)
    return specs


def _label(flags: Sequence[str]) -> str:
    """A short readable name, e.g. ``relu+bn+res+clip1`` for ``--act relu --bn --residual
    --clip-norm 1``."""
    parts: list[str] = []
    it = iter(flags)
    short = {"--bn": "bn", "--residual": "res", "--clip-norm": "clip", "--clip-value": "clipv"}
    for flag in it:
        key, _, inline = flag.partition("=")
        if key == "--act":
            parts.insert(0, inline or next(it, "?"))
        elif key in ("--clip-norm", "--clip-value"):
            parts.append(short[key] + (inline or next(it, "")))
        elif key in short:
            parts.append(short[key])
        elif key.startswith("--"):
            parts.append(key[2:] + (f"={inline}" if inline else ""))
        else:
            parts[-1:] = [f"{parts[-1]}={flag}" if parts else flag]
    return "+".join(parts) or "default"


@dataclass(slots=True)
class Trainer:
    """A started trainer subprocess."""

    spec: TrainerSpec
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def last_error(self) -> str:
        """The last non-empty line the trainer wrote to stderr ("" if none)."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""


def _set_parent_death_signal() -> None:
    """In the child: get SIGTERM if the demo dies without cleaning up (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the demo's own cleanup still applies
        pass


class TrainerGroup:
    """Starts trainers, each on its own endpoint, and guarantees they are all stopped.

    Args:
        specs: one per trainer.
        depth: hidden layers for every trainer; steps: 0 = until stopped.
        extra: flags appended to every trainer (e.g. ``("--width", "64")``).
        record_dir: record each run there; None passes ``--no-record``.
        tcp: bind ``tcp://127.0.0.1:<free port>`` instead of a private ipc socket.
        python: the interpreter to run ``-m <module>`` with.
        module: the trainer module (tests substitute stand-ins).
        env: extra environment variables for the trainers.
    """

    def __init__(
        self,
        specs: Sequence[TrainerSpec],
        *,
        depth: int = 20,
        steps: int = 0,
        extra: Sequence[str] = (),
        record_dir: str | None = None,
        tcp: bool = False,
        python: str = sys.executable,
        module: str = "trainer",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.depth = depth
        self.steps = steps
        self.extra = list(extra)
        self.record_dir = record_dir
        self.tcp = tcp
        self.python = python
        self.module = module
        self.env = dict(env or {})
        self.trainers: list[Trainer] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def workdir(self) -> Path:
        """Private (0700) directory holding the ipc sockets and the trainers' stderr logs."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gradtui-demo-")
        return Path(self._tmp.name)

    def _endpoint(self, index: int) -> str:
        if self.tcp:
            return f"tcp://127.0.0.1:{free_tcp_port()}"
        return f"ipc://{self.workdir / f'{index}.sock'}"

    def argv_for(self, spec: TrainerSpec, endpoint: str) -> list[str]:
        """The full command line of one trainer."""
        argv = [self.python, "-m", self.module, *spec.flags, *self.extra]
        argv += ["--depth", str(self.depth), "--steps", str(self.steps)]
        argv += ["--endpoint", endpoint, "--name", spec.label, "--quiet"]
        argv += ["--record-dir", self.record_dir] if self.record_dir else ["--no-record"]
        return argv

    def start(self) -> list[Trainer]:
        """Start every trainer (does not wait for them to publish).

        Raises:
            GradtuiError: a trainer could not be started; the ones already started are stopped.
        """
        env = dict(os.environ)
        # Several trainers share the cores: one intra-op thread each avoids oversubscription.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
        env.update(self.env)
        try:
            for index, spec in enumerate(self.specs):
                endpoint = self._endpoint(index)
                argv = self.argv_for(spec, endpoint)
                log_path = self.workdir / f"{index}.stderr"
                log = log_path.open("wb")
                self._logs.append(log)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
                )
                self.trainers.append(Trainer(spec, endpoint, proc, log_path, argv))
        except OSError as exc:
            self.stop()
            raise GradtuiError(f"cannot start a trainer: {exc}", code=1) from None
        return self.trainers

    @property
    def endpoints(self) -> list[str]:
        return [t.endpoint for t in self.trainers]

    def running(self) -> list[Trainer]:
        return [t for t in self.trainers if t.process.poll() is None]

    def failed(self) -> list[Trainer]:
        """Trainers that exited on their own with a non-zero code."""
        return [t for t in self.trainers if t.process.poll() not in (None, 0)]

    def stop(self, timeout: float = 3.0) -> list[int]:
        """SIGTERM every running trainer, SIGKILL what is left after ``timeout`` s; idempotent.

        Returns:
            The pids that had to be killed.
        """
        for t in self.running():
            _signal(t.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed: list[int] = []
        for t in self.trainers:
            try:
                t.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(t.process, signal.SIGKILL)
                killed.append(t.pid)
        for t in self.trainers:
            if t.process.poll() is None:
                t.process.wait(5.0)  # after SIGKILL this is immediate; reaps the zombie
        for log in self._logs:
            log.close()
        self._logs.clear()
        return killed

    def cleanup(self) -> None:
        """Remove the private work directory (sockets, logs)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TrainerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The trainer leads its own session, so its process group holds any helpers it spawned
    # (e.g. data-loader workers); signal the group, falling back to the process itself.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with suppress(ProcessLookupError):
            proc.send_signal(sig)


def free_tcp_port() -> int:
    """A currently free loopback TCP port (a small race remains until the trainer binds it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def exit_on_signals(
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``SystemExit`` so ``finally`` blocks (trainer cleanup) run.

    Python's default for these signals ends the process without unwinding. Installed only from
    the main thread; restored on exit.
    """
    old: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}

    def _handle(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            old[sig] = signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
