"""shmd: the daemon, its client library and its CLI.

The client lives in ``shmd.client``; the exceptions every layer raises are
listed here.
"""

from ._errors import (
    BadVersion,
    ChannelBusy,
    ConfigError,
    DaemonError,
    DaemonRunning,
    DeadlineExceeded,
    InternalError,
    InvalidFields,
    InvalidInput,
    NotReady,
    Overloaded,
    ShmdError,
    UnknownModel,
)

__all__ = [
    "BadVersion",
    "ChannelBusy",
    "ConfigError",
    "DaemonError",
    "DaemonRunning",
    "DeadlineExceeded",
    "InternalError",
    "InvalidFields",
    "InvalidInput",
    "NotReady",
    "Overloaded",
    "ShmdError",
    "UnknownModel",
]
