"""Recording to SQLite: the public names, re-exported from ``gradtui.storage``."""

from __future__ import annotations

from gradtui.storage import (
    SCHEMA_VERSION,
    RecordedRun,
    Recording,
    RecordingError,
    RunRecorder,
    default_directory,
    open_recording,
    run_file_name,
)

__all__ = [
    "SCHEMA_VERSION",
    "RecordedRun",
    "Recording",
    "RecordingError",
    "RunRecorder",
    "default_directory",
    "open_recording",
    "run_file_name",
]
