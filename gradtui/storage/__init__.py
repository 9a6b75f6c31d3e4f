"""Recording runs to SQLite and reading them back (format: ``docs/storage.md``)."""

from __future__ import annotations

from gradtui.storage.reader import RecordedRun, Recording, RecordingError, open_recording
from gradtui.storage.schema import SCHEMA_VERSION, default_directory, run_file_name
from gradtui.storage.writer import RunRecorder

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
