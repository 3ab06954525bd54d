"""RequestError: a user's mistake, answered with a 4xx JSON body that names the field and the fix."""
from __future__ import annotations

# Raised inside an Engine call (from its cancel check) once its request timed out or went away.
from cyclediff.runtime.core.cancel import Cancelled  # noqa: F401  (the one cancellation error)


class RequestError(Exception):
    """status: the HTTP status (400 unreadable, 413 too large, 415 wrong content type, 422 invalid value)."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict:
        return {"error": self.message, "field": self.field}


class RequestTimeout(Exception):
    """The request ran past its timeout; its Engine call was told to stop."""
