"""The exceptions of shmd, and the one place daemon statuses become them."""

from __future__ import annotations

from kernel_abi import ModelId, Status, payload_field_name


class ShmdError(Exception):
    """Base of every error raised by shmd."""


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

    The daemon may be stopped or overloaded; the request may still be answered
    later (its response is then dropped as unknown).
    """


class InvalidFields(ShmdError, ValueError):
    """Raised before submitting when a request's fields are malformed.

    ``field`` names the API field (camelCase, dotted for nested) and ``rule``
    what it must satisfy.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class DaemonError(ShmdError):
    """Raised when the daemon answered a request with a non-OK status.

    ``status`` is the kernel_abi Status; ``field`` the payload field it blames
    (or '').
    """

    def __init__(self, status: Status, model: ModelId | int, field: str = "", detail: str = "") -> None:
        self.status = status
        self.model = model
        self.field = field
        what = f"{status.name}"
        if field:
            what += f" in field {field}"
        super().__init__(f"{what}{': ' + detail if detail else ''}")


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
