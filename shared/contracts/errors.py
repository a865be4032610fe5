"""Errors with a stable code, shared by request/reply handlers and clients."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from routewise.contracts.events import Contract


class RoutewiseError(Exception):
    """An error a caller can act on: a stable ``code`` and a human message."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class PermanentError(RoutewiseError):
    """Processing this message can never succeed: dead-letter it at once, don't retry."""

    code = "permanent"


class RemoteError(RoutewiseError):
    """A service answered a request with an error."""

    @classmethod
    def of(cls, exc: RoutewiseError) -> RemoteError:
        """``exc`` as the error reply of the service that raised it would arrive."""
        return cls(exc.message, code=exc.code, details=exc.details)


class ErrorInfo(Contract):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorReply(Contract):
    error: ErrorInfo
