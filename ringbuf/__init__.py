"""ringbuf: single-producer single-consumer rings in POSIX shared memory.

Knows nothing about models: a channel is a submission ring of REQUEST slots
and a completion ring of RESPONSE slots (kernel_abi), and this package moves
records through them with acquire/release ordering and io_uring-style wake-ups.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    AccessDenied,
    LayoutMismatch,
    RingCorrupt,
    RingError,
    SegmentExists,
    SegmentNotFound,
    UntrustedObject,
)
from ._ownership import DAEMON_UID_ENV, PRIVATE, Access, Trust, open_own_segment, open_peer_segment
from ._segment import (
    DEFAULT_MODE,
    Channel,
    RingView,
    completion_semaphore_name,
    create_semaphore,
    doorbell_name,
    leftovers,
    open_semaphore,
    remove_leftovers,
    segment_name,
)

if TYPE_CHECKING:
    from ._core import CORRUPT
    from ._ends import DEFAULT_SPIN_US, Consumer, Producer

# The ring ends are numba-compiled: importing numba costs ~130 MB of resident memory, so
# they load on first use. A process that only names segments or reads the stats segment
# (the HTTP shim, which reaches its channel through the C client) never pays for it.
_LAZY = {"CORRUPT": "_core", "DEFAULT_SPIN_US": "_ends", "Consumer": "_ends", "Producer": "_ends"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CORRUPT",
    "DAEMON_UID_ENV",
    "DEFAULT_MODE",
    "DEFAULT_SPIN_US",
    "PRIVATE",
    "Access",
    "AccessDenied",
    "Channel",
    "Consumer",
    "LayoutMismatch",
    "Producer",
    "RingCorrupt",
    "RingError",
    "RingView",
    "SegmentExists",
    "SegmentNotFound",
    "Trust",
    "UntrustedObject",
    "completion_semaphore_name",
    "create_semaphore",
    "doorbell_name",
    "leftovers",
    "open_own_segment",
    "open_peer_segment",
    "open_semaphore",
    "remove_leftovers",
    "segment_name",
]
