"""ringbuf: single-producer single-consumer rings in POSIX shared memory.

Knows nothing about models: a channel is a submission ring of REQUEST slots
and a completion ring of RESPONSE slots (kernel_abi), and this package moves
records through them with acquire/release ordering and io_uring-style wake-ups.
"""

from ._core import CORRUPT
from ._ends import DEFAULT_SPIN_US, Consumer, Producer
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
