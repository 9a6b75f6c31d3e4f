"""The local run registry: one JSON file per live run in a private runtime directory.

Like Jupyter's kernel connection files: a publisher writes ``<run>.json`` naming its endpoint,
viewers list the directory. Entries of processes that died without cleaning up are pruned
by pid. The directory is 0700 and must belong to the user, because its ipc sockets are the
runs' only access control.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gradtui.errors import GradtuiError
from gradtui.protocol import valid_run_id


class RegistryError(GradtuiError):
    """The runtime directory is unusable (not ours, too permissive, not a directory)."""


@dataclass
class RunEntry:
    """One registered run, as stored in ``<runtime_dir>/<run>.json``."""

    run: str
    """Run id (``protocol.valid_run_id``)."""
    name: str
    """Human name given by the trainer."""
    endpoint: str
    """Where the run's publisher is bound (``ipc://...`` or ``tcp://127.0.0.1:PORT``)."""
    pid: int
    """Publisher process id on ``host``."""
    host: str
    """Hostname of the publisher (pruning by pid only applies on the same host)."""
    started: float
    """Unix time the publisher started."""
    step: int = -1
    """Last published step, refreshed at most once a second; -1 before the first."""
    updated: float = 0.0
    """Unix time of the last refresh."""
    snapshot: str = ""
    """Endpoint of the run's history service for late joiners ("" when it has none)."""


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run": str,
    "name": str,
    "endpoint": str,
    "pid": int,
    "host": str,
    "started": (int, float),
    "step": int,
    "updated": (int, float),
    "snapshot": str,
}


def runtime_dir(create: bool = True) -> Path:
    """The private runtime directory, created 0700 when missing.

    ``$GRADTUI_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/gradtui``, else
    ``~/.cache/gradtui/runtime``.

    Raises:
        RegistryError: the directory belongs to someone else or is group/world-writable.
    """
    env = os.environ.get("GRADTUI_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if env:
        path = Path(env)
    elif xdg:
        path = Path(xdg) / "gradtui"
    else:
        path = Path.home() / ".cache" / "gradtui" / "runtime"
    if create and not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
    if path.exists():
        _check_private(path)
    return path


def _check_private(path: Path) -> None:
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise RegistryError(f"runtime dir {path} is not a directory")
    if info.st_uid != os.getuid():
        raise RegistryError(f"runtime dir {path} belongs to another user; refusing to use it")
    if info.st_mode & 0o022:
        raise RegistryError(
            f"runtime dir {path} is group/world-writable; run `chmod 700 {path}` first"
        )


def _entry_path(run: str, directory: Path) -> Path:
    if not valid_run_id(run):
        raise ValueError(f"invalid run id {run!r}")
    return directory / f"{run}.json"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    # Write-then-rename so a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def register(entry: RunEntry) -> Path:
    """Write (or overwrite) the run's registry file atomically; returns its path."""
    path = _entry_path(entry.run, runtime_dir())
    if not entry.updated:
        entry.updated = time.time()
    _write_atomic(path, asdict(entry))
    return path


def _read(path: Path) -> RunEntry | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    raw.setdefault("snapshot", "")  # entries written before the field existed
    for key, typ in _FIELDS.items():
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, typ):
            return None
    if not valid_run_id(raw["run"]) or path.stem != raw["run"]:
        return None
    return RunEntry(**{key: raw[key] for key in _FIELDS})


def update_step(run: str, step: int) -> None:
    """Refresh the run's last step; a missing or corrupt entry is left alone."""
    path = _entry_path(run, runtime_dir())
    entry = _read(path)
    if entry is None:
        return
    entry.step = step
    entry.updated = time.time()
    _write_atomic(path, asdict(entry))


def unregister(run: str) -> None:
    """Remove the run's registry file (missing is fine)."""
    with contextlib.suppress(FileNotFoundError):
        _entry_path(run, runtime_dir(create=False)).unlink()


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists on this host (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(prune: bool = True) -> list[RunEntry]:
    """The registered runs, oldest first.

    Args:
        prune: drop entries whose pid is dead on this host, deleting their file and their
            ipc socket (when it lies in the runtime directory). Corrupt files are skipped.
    """
    directory = runtime_dir(create=False)
    if not directory.is_dir():
        return []
    _check_private(directory)
    here = socket.gethostname()
    out: list[RunEntry] = []
    for path in sorted(directory.glob("*.json")):
        entry = _read(path)
        if entry is None:
            continue
        if prune and entry.host == here and not pid_alive(entry.pid):
            _remove_dead(entry, path, directory)
            continue
        out.append(entry)
    out.sort(key=lambda e: (e.started, e.run))
    return out


def _remove_dead(entry: RunEntry, path: Path, directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for endpoint in (entry.endpoint, entry.snapshot):
        if not endpoint.startswith("ipc://"):
            continue
        sock = Path(endpoint[len("ipc://") :])
        # Only delete sockets we own: never follow an entry to a path outside the dir.
        if sock.parent.resolve() == directory.resolve():
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()


def printable(text: str) -> str:
    """Wire and registry strings are untrusted: replace control characters before printing."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def resolve_endpoints(targets: Sequence[str], entries: Iterable[RunEntry]) -> list[str]:
    """Endpoints for ``targets``: endpoints as given, run ids or names looked up in ``entries``.

    Raises:
        GradtuiError: a name matching no entry (exit 2; the message lists the live runs).
    """
    from gradtui.endpoints import is_endpoint  # deferred: keeps `import registry` light

    entries = list(entries)
    out: list[str] = []
    for target in targets:
        if is_endpoint(target):
            out.append(target)
            continue
        found = [e.endpoint for e in entries if target in (e.run, e.name)]
        if not found:
            live = ", ".join(printable(e.run) for e in entries) or "none"
            raise GradtuiError(f"no live run {printable(target)!r}; live runs: {live}", code=2)
        out.extend(found)
    return list(dict.fromkeys(out))
