"""The one place where errors become HTTP statuses.

Every handler raises (or lets through) an exception; the error middleware in
``_app`` calls ``http_error`` and answers ``{"success": false, "error": ...}``
with the status chosen here, so the mapping daemon status -> Python
exception -> HTTP status is read in one table.
"""

from __future__ import annotations

from aiohttp import web

from shmd._errors import (
    BadVersion,
    ChannelError,
    DaemonError,
    DeadlineExceeded,
    InternalError,
    InvalidFields,
    InvalidInput,
    NotReady,
    Overloaded,
    UnknownModel,
)


class HttpError(Exception):
    """Raised by the shim itself for a request it refuses (size, type, syntax, auth, unknown path).

    ``status`` is the HTTP status; the message is the ``error`` field.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Daemon-side errors, in order of specificity (subclasses first).
_DAEMON_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InvalidInput, 400),  # a value out of its range: the caller's fault
    (UnknownModel, 404),
    (DeadlineExceeded, 504),
    (Overloaded, 503),  # shed under load: retry later
    (BadVersion, 500),  # our own records carry our ABI version: a build mismatch
    (InternalError, 500),
    (DaemonError, 500),
)


def http_error(exc: BaseException) -> tuple[int, str]:
    """(status, message) for any exception a handler let through."""
    if isinstance(exc, HttpError):
        return exc.status, exc.message
    if isinstance(exc, InvalidFields):
        return 400, str(exc)
    if isinstance(exc, NotReady):
        return 503, f"daemon did not answer in time: {exc}"
    if isinstance(exc, ChannelError):
        return 503, f"daemon channel unavailable: {exc}"
    for cls, status in _DAEMON_STATUS:
        if isinstance(exc, cls):
            return status, str(exc)
    if isinstance(exc, web.HTTPException):
        # aiohttp's own refusals (413 past client_max_size, 404/405 routing).
        return exc.status, exc.reason or str(exc)
    return 500, f"internal error: {type(exc).__name__}"


__all__ = ["HttpError", "http_error"]
