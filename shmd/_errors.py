"""The exceptions of shmd, and the one place daemon statuses and ring errors become them.

Two translations happen here and nowhere else: a response's status becomes a
``DaemonError`` (``error_for``) and an error of the ring layer becomes a
``ChannelError`` (``from_ring_error``). Each class's ``status`` is the
kernel_abi Status it stands for, so the next boundary (HTTP) maps statuses,
not exception names.
"""

from __future__ import annotations

import ringbuf
from kernel_abi import ModelId, Status, payload_field_name


class ShmdError(Exception):
    """Base of every error raised by shmd."""

    status: Status = Status.INTERNAL


class ConfigError(ShmdError):
    """Raised at start-up when a flag, config file or environment value is invalid."""


class DaemonRunning(ShmdError):
    """Raised by ``shmd serve`` when another daemon already serves the prefix.

    Stop that one, or start this one with another ``--prefix``.
    """


class ChannelBusy(ShmdError):
    """Raised on attach when another live process holds the channel.

    Detach there first or pick another channel; a crashed holder's hold is
    released by the OS, so no cleanup is needed after a crash.
    """


class NotReady(ShmdError):
    """Raised when no answer came within the client's timeout.

    The daemon may be stopped or overloaded. The client forgets the request:
    an answer arriving later is dropped as unknown (and counted in ``dropped``).
    """

    status = Status.OVERLOADED


class ChannelError(ShmdError):
    """A channel cannot be used (raised by clients, translated from ringbuf's errors).

    Nothing was answered on it; retry once the daemon is back or has re-created
    the channel (a corrupt channel is re-created when its holder detaches).
    """

    status = Status.OVERLOADED


class DaemonUnavailable(ChannelError, ringbuf.SegmentNotFound):
    """No segment for the channel: the daemon is not running (or uses another prefix)."""


class ChannelMismatch(ChannelError, ringbuf.LayoutMismatch):
    """The segment is not a channel of this ABI version (or was overwritten); the message says which word."""


class ChannelCorrupt(ChannelError, ringbuf.RingCorrupt):
    """The peer broke the ring protocol (invalid index); the channel is unusable until re-created.

    Detach: the daemon re-creates a corrupt channel once nobody holds it.
    """


class UntrustedObject(ChannelError, ringbuf.UntrustedObject):
    """The segment is not the daemon's (another owner, mode or group); the message says whose it is."""


class AccessDenied(ChannelError, ringbuf.AccessDenied):
    """This user may not open the segment; the message says which user or group may."""


_BY_RING_ERROR: tuple[tuple[type[ringbuf.RingError], type[ChannelError]], ...] = (
    (ringbuf.SegmentNotFound, DaemonUnavailable),
    (ringbuf.LayoutMismatch, ChannelMismatch),
    (ringbuf.RingCorrupt, ChannelCorrupt),
    (ringbuf.UntrustedObject, UntrustedObject),
    (ringbuf.AccessDenied, AccessDenied),
)


# The C client's error codes (kernel_abi/c/shmd_client.h, enum shmd_error) that name a channel
# failure; any other code from a call that should have answered means no answer in time.
_BY_C_CODE: dict[int, type[ShmdError]] = {
    -1: DaemonUnavailable,  # SHMD_ENOTFOUND
    -3: ChannelMismatch,  # SHMD_ELAYOUT
    -4: ChannelCorrupt,  # SHMD_ECORRUPT
    -5: NotReady,  # SHMD_EDEAD: it stopped or hangs; the message says which
    -10: UntrustedObject,  # SHMD_EUNTRUSTED
}


def from_c_client(code: int, message: str) -> ShmdError:
    """The shmd exception for a negative return of the C client library (for callers that use it)."""
    return _BY_C_CODE.get(code, NotReady)(message)


def from_ring_error(err: ringbuf.RingError) -> ShmdError:
    """The shmd exception for an error of the ring layer (translation happens only here)."""
    if isinstance(err, ShmdError):
        return err
    for ring_cls, cls in _BY_RING_ERROR:
        if isinstance(err, ring_cls):
            return cls(str(err))
    return ChannelError(str(err))


class InvalidFields(ShmdError, ValueError):
    """Raised before submitting when a request's fields are malformed.

    ``field`` names the API field (camelCase, dotted for nested), ``rule``
    what it must satisfy, and ``item`` the index of the offending item in a
    batch (None for a single request).
    """

    status = Status.INVALID_INPUT

    def __init__(self, field: str, rule: str, item: int | None = None) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.item = item

    def __str__(self) -> str:
        text = f"{self.field}: {self.rule}"
        return text if self.item is None else f"item {self.item}: {text}"


class DaemonError(ShmdError):
    """Raised when the daemon answered a request with a non-OK status.

    ``status`` is the kernel_abi Status; ``field`` the payload field it blames
    (or '').
    """

    def __init__(
        self, status: Status, model: ModelId | int, field: str = "", detail: str = "", item: int | None = None
    ) -> None:
        self.status = status
        self.model = model
        self.field = field
        self.detail = detail
        self.item = item  # index in a batch, None for a single request
        super().__init__()

    def __str__(self) -> str:
        what = self.status.name + (f" in field {self.field}" if self.field else "")
        what += f": {self.detail}" if self.detail else ""
        return what if self.item is None else f"item {self.item}: {what}"


class InvalidInput(DaemonError):
    """The daemon rejected a field's value; fix the field named in ``field``."""


class UnknownModel(DaemonError):
    """The request named a model the daemon does not serve."""


class DeadlineExceeded(DaemonError):
    """The request's deadline passed before it was served; it was not inferred."""


class Overloaded(DaemonError):
    """The daemon shed the request; retry later or with a longer deadline."""


class InternalError(DaemonError):
    """The daemon failed to serve a valid request; see its log."""


class BadVersion(DaemonError):
    """The record's ABI version differs from the daemon's; rebuild the caller."""


_BY_STATUS: dict[Status, type[DaemonError]] = {
    Status.INVALID_INPUT: InvalidInput,
    Status.UNKNOWN_MODEL: UnknownModel,
    Status.DEADLINE_EXCEEDED: DeadlineExceeded,
    Status.OVERLOADED: Overloaded,
    Status.INTERNAL: InternalError,
    Status.BAD_VERSION: BadVersion,
}


def error_for(status: int, model: int, error_field: int, detail: str = "") -> DaemonError:
    """The exception for a non-OK response (translation happens only here)."""
    try:
        st = Status(status)
    except ValueError:
        return InternalError(Status.INTERNAL, model, "", f"unknown status {status}")
    try:
        mid: ModelId | int = ModelId(model)
        field = payload_field_name(mid, error_field)  # type: ignore[arg-type]
    except ValueError:
        mid, field = model, ""
    return _BY_STATUS.get(st, InternalError)(st, mid, field, detail)
