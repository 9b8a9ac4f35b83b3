"""ringbuf: single-producer single-consumer rings in POSIX shared memory.

Knows nothing about models: a channel is a submission ring of REQUEST slots
and a completion ring of RESPONSE slots (kernel_abi), and this package moves
records through them with acquire/release ordering and io_uring-style
wake-ups on futex words inside the segment.

The public API is what this module exports: ``Channel`` (segments),
``Producer``/``Consumer`` (one ring from Python), ``ChannelTable`` and the
``table_*`` functions (every channel of a server, callable from its
compiled loop), the ``ring_*`` functions (one ring's protocol, callable from a
client's compiled code), and the clock and spin hints compiled code needs.
"""

from typing import TYPE_CHECKING, Any

from ._doorbell import ring_doorbell
from ._errors import (
    AccessDenied,
    LayoutMismatch,
    RingCorrupt,
    RingError,
    SegmentExists,
    SegmentNoSpace,
    SegmentNotFound,
    UntrustedObject,
)
from ._ownership import DAEMON_UID_ENV, DEFAULT_MODE, PRIVATE, Access, Trust, open_own_segment, open_peer_segment
from ._segment import (
    Channel,
    RingView,
    leftovers,
    remove_leftovers,
    reserve,
    segment_name,
)

if TYPE_CHECKING:
    from ._atomics import cpu_relax, monotonic_ns, spin_pause, yield_cpu
    from ._core import CORRUPT, ring_nudge, ring_peek, ring_produce, ring_release, ring_wait
    from ._ends import DEFAULT_SPIN_US, Consumer, Producer
    from ._table import (
        INTERRUPTED,
        TIMED_OUT,
        WOKEN,
        ChannelTable,
        table_answer,
        table_peek,
        table_ready,
        table_release,
        table_sleep,
        table_wake,
    )

# The ring ends are numba-compiled: importing numba costs ~130 MB of resident memory, so
# they load on first use. A process that only names segments or reads the stats segment
# (the HTTP shim, which reaches its channel through the C client) never pays for it.
_LAZY = {
    **dict.fromkeys(("CORRUPT", "ring_nudge", "ring_peek", "ring_produce", "ring_release", "ring_wait"), "_core"),
    "DEFAULT_SPIN_US": "_ends",
    "Consumer": "_ends",
    "Producer": "_ends",
    "cpu_relax": "_atomics",
    "monotonic_ns": "_atomics",
    "spin_pause": "_atomics",
    "yield_cpu": "_atomics",
    **dict.fromkeys(
        (
            "INTERRUPTED", "TIMED_OUT", "WOKEN", "ChannelTable", "table_answer", "table_peek", "table_ready",
            "table_release", "table_sleep", "table_wake",
        ),
        "_table",
    ),
}  # fmt: skip


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
    "INTERRUPTED",
    "PRIVATE",
    "TIMED_OUT",
    "WOKEN",
    "Access",
    "AccessDenied",
    "Channel",
    "ChannelTable",
    "Consumer",
    "LayoutMismatch",
    "Producer",
    "RingCorrupt",
    "RingError",
    "RingView",
    "SegmentExists",
    "SegmentNoSpace",
    "SegmentNotFound",
    "Trust",
    "UntrustedObject",
    "cpu_relax",
    "leftovers",
    "monotonic_ns",
    "open_own_segment",
    "open_peer_segment",
    "remove_leftovers",
    "reserve",
    "ring_doorbell",
    "ring_nudge",
    "ring_peek",
    "ring_produce",
    "ring_release",
    "ring_wait",
    "segment_name",
    "spin_pause",
    "table_answer",
    "table_peek",
    "table_ready",
    "table_release",
    "table_sleep",
    "table_wake",
    "yield_cpu",
]
