"""Python ends of a ring: a Producer and a Consumer over the compiled core.

Both call the same ``@njit`` functions the daemon's loop inlines, so Python
and compiled callers share one implementation of the protocol. The wake-up
protocol follows io_uring's SQPOLL: the consumer spins for a bounded window,
then sets NEED_WAKEUP, fences, re-checks, and only then sleeps on the ring's
``wake_seq`` word (FUTEX_WAIT, with a timeout); a producer fences after
publishing and wakes it (FUTEX_WAKE) only when NEED_WAKEUP is set. Both
halves run in compiled code.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core as core
from ._errors import RingCorrupt
from ._segment import RingView

DEFAULT_SPIN_US = 50


class Producer:
    """The writing end of one ring. Not thread-safe: one producer per ring."""

    def __init__(self, ring: RingView) -> None:
        self.ring = ring
        self.state = core.new_state(int(ring.hdr64[core.TAIL]), int(ring.hdr64[core.HEAD]))
        self.wakeups_posted = 0

    @property
    def corrupt(self) -> bool:
        return bool(self.state[core.CORRUPT_FLAG])

    @property
    def tail(self) -> int:
        """The next index this producer will fill."""
        return int(self.state[core.OWN])

    def _check(self, n: int) -> int:
        if n == core.CORRUPT:
            raise RingCorrupt(
                f"{self.ring.kind.name.lower()} ring is corrupt: its consumer's head is invalid "
                f"(head={int(self.ring.hdr64[core.HEAD])}, tail={self.tail}, capacity={self.ring.capacity})"
            )
        return n

    def space(self) -> int:
        """Free slots now."""
        return self._check(int(core.ring_space(self.ring.hdr64, self.state, self.ring.capacity)))

    def produce(self, records: np.ndarray) -> int:
        """Copy records into the ring; how many were accepted (0 when full)."""
        slot_size = self.ring.slots.shape[1]
        records = np.ascontiguousarray(records)
        # Row size from the shape, not reshape(n, -1), which fails on an empty batch.
        row_bytes = records.itemsize * math.prod(records.shape[1:])
        rows = records.view(np.uint8).reshape(len(records), row_bytes)
        if rows.shape[1] != slot_size:
            raise ValueError(f"record size must equal the slot size: record={rows.shape[1]} slot={slot_size}")
        accepted, woke = core.ring_produce(
            self.ring.hdr64, self.ring.hdr32, self.ring.slots, self.state, rows, len(rows)
        )
        self.wakeups_posted += woke
        return self._check(int(accepted))

    def reserve(self, n: int, dtype: np.dtype | None = None) -> list[np.ndarray]:
        """Views of up to ``n`` free slots, in order, to be filled in place.

        At most two views (the run may wrap around the end of the ring); their
        total length is what fits. ``dtype`` picks how the slots are seen
        (default: the ring's record dtype). Fill them, then ``commit`` that many.
        """
        k = min(n, self.space())
        start = self.tail & (self.ring.capacity - 1)
        records = self.ring.records(dtype)
        first = records[start : start + k]
        if len(first) == k:
            return [first] if k else []
        return [first, records[: k - len(first)]]

    def commit(self, n: int) -> None:
        """Publish ``n`` slots written through ``reserve``."""
        self.wakeups_posted += core.ring_commit(self.ring.hdr64, self.ring.hdr32, self.state, n)

    def nudge(self) -> None:
        """Wake a sleeping consumer that has records pending.

        For a consumer that stopped draining for want of room elsewhere (the
        daemon, when this side's completion ring was full): call after
        making that room, so it need not wait for its sleep timeout.
        """
        self.wakeups_posted += core.ring_nudge(self.ring.hdr64, self.ring.hdr32, self.state)


class Consumer:
    """The reading end of one ring. Not thread-safe: one consumer per ring."""

    def __init__(self, ring: RingView) -> None:
        self.ring = ring
        head = int(ring.hdr64[core.HEAD])
        self.state = core.new_state(head, head)

    @property
    def sleeps(self) -> int:
        """Times this consumer slept on the ring's wake-up word."""
        return int(self.state[core.SLEEPS])

    @property
    def corrupt(self) -> bool:
        return bool(self.state[core.CORRUPT_FLAG])

    @property
    def head(self) -> int:
        """The next index this consumer will read."""
        return int(self.state[core.OWN])

    def _check(self, n: int) -> int:
        if n == core.CORRUPT:
            raise RingCorrupt(
                f"{self.ring.kind.name.lower()} ring is corrupt: its producer's tail is invalid "
                f"(tail={int(self.ring.hdr64[core.TAIL])}, head={self.head}, capacity={self.ring.capacity})"
            )
        return n

    def ready(self) -> int:
        """Records published and not yet released."""
        return self._check(int(core.ring_ready(self.ring.hdr64, self.state, self.ring.capacity)))

    def peek(self, out: np.ndarray, max_n: int | None = None) -> int:
        """Copy up to ``max_n`` ready records into ``out`` without releasing them."""
        # Row size from the shape, not reshape(n, -1), which fails on an empty buffer.
        rows = out.view(np.uint8).reshape(len(out), out.itemsize * math.prod(out.shape[1:]))
        limit = len(out) if max_n is None else max_n
        return self._check(int(core.ring_peek(self.ring.hdr64, self.ring.slots, self.state, rows, limit)))

    def release(self, n: int) -> None:
        """Give ``n`` peeked slots back to the producer."""
        core.ring_release(self.ring.hdr64, self.state, n)

    def consume(self, max_n: int) -> np.ndarray:
        """Up to ``max_n`` records, copied out and released."""
        max_n = min(max_n, self.ready())  # size the copy by what is there, not by the ask
        out = np.empty(max_n, self.ring.record_dtype)
        n = self.peek(out)
        self.release(n)
        return out[:n]

    def wait(self, timeout: float, spin_us: float = DEFAULT_SPIN_US) -> int:
        """Block until a record is ready or ``timeout`` s pass; the ready count.

        Spins for at most ``spin_us`` first, then sleeps on the ring's wake-up
        word; returns 0 early when a signal arrives (so its handler runs).
        """
        ring = self.ring
        n = core.ring_wait(
            ring.hdr64, ring.hdr32, self.state, ring.capacity, int(spin_us * 1000), max(int(timeout * 1e9), 0)
        )
        return self._check(int(n))
