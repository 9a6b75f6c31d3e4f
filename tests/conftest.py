"""Suite-wide setup: trainer runs started by tests record into a temporary directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _recordings_out_of_the_checkout() -> Iterator[None]:
    """Trainers record to ./runs by default; tests (and their subprocesses) must not litter it."""
    with tempfile.TemporaryDirectory(prefix="gradtui-runs-") as d:
        old = os.environ.get("GRADTUI_RECORD_DIR")
        os.environ["GRADTUI_RECORD_DIR"] = d
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("GRADTUI_RECORD_DIR", None)
            else:
                os.environ["GRADTUI_RECORD_DIR"] = old
