"""The one exception type that commands raise for a user-facing failure."""

from __future__ import annotations


class GradtuiError(Exception):
    """A failure the user can act on; the CLI prints ``gradtui: <message>`` and exits ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
