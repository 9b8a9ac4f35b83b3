"""Many channels seen from their one server: a table of ring addresses, compiled.

The daemon consumes every channel's SQ and produces into every CQ. It hands
its compiled loop one ``int64[channels, TABLE_COLUMNS]`` table of mmap
addresses and capacities rather than a list of arrays: numba unboxes every
array argument on each call, and a small table keeps that cost constant
whatever the number of channels. The functions here are the ring protocol of
``_core`` applied to row ``c`` of that table, plus the one thing only a
server of many rings does: sleep on all its SQs at once (``futex_waitv`` on
every SQ's ``wake_seq``).

``ChannelTable`` builds the table and the private per-ring states from
``Channel`` objects and answers the questions the daemon asks between passes
(queued records, corrupt rings) from validated private state only: it never
reads a word the peer writes except through the protocol's checked loads.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from kernel_abi import MAX_CHANNELS, RING_HEADER_SIZE

from . import _core as core
from ._atomics import full_fence, load_acquire, monotonic_ns
from ._futex import EAGAIN, ETIMEDOUT, FUTEX_32, WAITV_ADDR, WAITV_FLAGS, WAITV_MAX, WAITV_VAL, WAITV_WORDS, futex_waitv
from ._segment import Channel

TABLE_SQ_HDR, TABLE_SQ_SLOTS, TABLE_SQ_CAP, TABLE_CQ_HDR, TABLE_CQ_SLOTS, TABLE_CQ_CAP = range(6)
TABLE_COLUMNS = 6
assert MAX_CHANNELS <= WAITV_MAX

#: table_sleep outcomes
WOKEN, TIMED_OUT, INTERRUPTED = 0, 1, 2

_HDR_WORDS64 = RING_HEADER_SIZE // 8
_HDR_WORDS32 = RING_HEADER_SIZE // 4


@intrinsic
def _voidptr(typingctx, address):
    """An integer address as a pointer (the table holds mmap addresses)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(address), codegen


@njit(nogil=True, cache=True, inline="always")
def _hdr64(table, c, col):
    return carray(_voidptr(table[c, col]), (_HDR_WORDS64,), np.uint64)


@njit(nogil=True, cache=True, inline="always")
def _hdr32(table, c, col):
    return carray(_voidptr(table[c, col]), (_HDR_WORDS32,), np.uint32)


@njit(nogil=True, cache=True, inline="always")
def _slots(table, c, col, cap_col, slot_size):
    return carray(_voidptr(table[c, col]), (table[c, cap_col], slot_size), np.uint8)


@njit(nogil=True, cache=True)
def table_ready(table, sq_state, cq_state, ready):
    """Per channel, records it may take now: min(SQ ready, CQ room), 0 if corrupt; the total."""
    total = 0
    for c in range(table.shape[0]):
        n = core.ring_ready(_hdr64(table, c, TABLE_SQ_HDR), sq_state[c], table[c, TABLE_SQ_CAP])
        if n > 0:
            room = core.ring_space(_hdr64(table, c, TABLE_CQ_HDR), cq_state[c], table[c, TABLE_CQ_CAP])
            n = min(n, room) if room > 0 else 0
        ready[c] = max(n, 0)
        total += ready[c]
    return total


@njit(nogil=True, cache=True)
def table_peek(table, sq_state, c, out, max_n):
    """Copy up to ``max_n`` requests of channel ``c`` into private ``out``; the count or CORRUPT."""
    slots = _slots(table, c, TABLE_SQ_SLOTS, TABLE_SQ_CAP, out.shape[1])
    return core.ring_peek(_hdr64(table, c, TABLE_SQ_HDR), slots, sq_state[c], out, max_n)


@njit(nogil=True, cache=True)
def table_answer(table, cq_state, c, rows, k):
    """Copy ``k`` response rows into channel ``c``'s CQ and publish them (one tail store).

    Returns True when its client sleeps: ``table_wake`` it once every channel
    of the pass is published.
    """
    hdr64 = _hdr64(table, c, TABLE_CQ_HDR)
    slots = _slots(table, c, TABLE_CQ_SLOTS, TABLE_CQ_CAP, rows.shape[1])
    state = cq_state[c]
    core.copy_into_ring(rows, slots, state[core.OWN], k)
    return core.ring_publish(hdr64, _hdr32(table, c, TABLE_CQ_HDR), state, k)


@njit(nogil=True, cache=True)
def table_release(table, sq_state, c, k):
    """Hand ``k`` SQ slots of channel ``c`` back to its client (one head store)."""
    core.ring_release(_hdr64(table, c, TABLE_SQ_HDR), sq_state[c], k)


@njit(nogil=True, cache=True)
def table_wake(table, c):
    """Wake channel ``c``'s client sleeping on its CQ."""
    core.ring_wake(_hdr32(table, c, TABLE_CQ_HDR))


@njit(nogil=True, cache=True)
def table_sleep(table, sq_state, cq_state, ready, waiters, timeout_ns):
    """Sleep until a client publishes into any SQ; ``(records ready, outcome)``.

    Announces sleep on every SQ (loading each ``wake_seq`` first), fences,
    re-checks, and only then waits on all the words at once; at most
    ``timeout_ns``. ``outcome`` is WOKEN, TIMED_OUT or INTERRUPTED (a signal:
    return to Python so its handler runs). NEED_WAKEUP is withdrawn before
    returning.
    """
    n_ch = table.shape[0]
    for c in range(n_ch):
        waiters[c, WAITV_VAL] = core.ring_announce_sleep(_hdr32(table, c, TABLE_SQ_HDR))
    # Pairs with every producer's fence after publishing (core.ring_publish).
    full_fence()
    total = table_ready(table, sq_state, cq_state, ready)
    outcome = WOKEN
    if total == 0:
        err = futex_waitv(waiters, n_ch, monotonic_ns() + timeout_ns)
        if err == ETIMEDOUT:
            outcome = TIMED_OUT
            # A producer that bumped its word as the timeout struck did wake us.
            for c in range(n_ch):
                if load_acquire(_hdr32(table, c, TABLE_SQ_HDR), core.WAKE_SEQ) != waiters[c, WAITV_VAL]:
                    outcome = WOKEN
        elif err < 0 and err != EAGAIN:  # EAGAIN: a word changed before we slept
            outcome = INTERRUPTED
        total = table_ready(table, sq_state, cq_state, ready)
    for c in range(n_ch):
        core.ring_end_sleep(_hdr32(table, c, TABLE_SQ_HDR))
    return total, outcome


class ChannelTable:
    """The table, private ring states and futex wait list of a server's channels."""

    def __init__(self, channels: list[Channel]) -> None:
        n = len(channels)
        if not 0 < n <= MAX_CHANNELS:
            raise ValueError(f"a table serves 1 to {MAX_CHANNELS} channels: channels={n}")
        self.table = np.zeros((n, TABLE_COLUMNS), np.int64)
        self.sq_state = np.zeros((n, core.STATE_WORDS), np.uint64)
        self.cq_state = np.zeros((n, core.STATE_WORDS), np.uint64)
        self.waiters = np.zeros((n, WAITV_WORDS), np.uint64)
        self.ready = np.zeros(n, np.int64)
        self.channels: list[Channel] = list(channels)
        for c, ch in enumerate(channels):
            self.bind(c, ch)

    def bind(self, c: int, ch: Channel) -> None:
        """Point row ``c`` at ``ch`` and take up its ring indices where they stand.

        A restarted daemon resumes from the SQ head it released last and the
        CQ tail it published last, so it answers what is pending.
        """
        self.channels[c] = ch
        for cols, ring in (
            ((TABLE_SQ_HDR, TABLE_SQ_SLOTS, TABLE_SQ_CAP), ch.sq),
            ((TABLE_CQ_HDR, TABLE_CQ_SLOTS, TABLE_CQ_CAP), ch.cq),
        ):
            self.table[c, cols[0]] = ring.hdr64.ctypes.data
            self.table[c, cols[1]] = ring.slots.ctypes.data
            self.table[c, cols[2]] = ring.capacity
        self.waiters[c, WAITV_ADDR] = ch.sq.hdr32.ctypes.data + core.WAKE_SEQ * 4
        self.waiters[c, WAITV_FLAGS] = FUTEX_32
        # Our own words: the SQ head and CQ tail are written only by the server.
        head, tail = int(ch.sq.hdr64[core.HEAD]), int(ch.cq.hdr64[core.TAIL])
        self.sq_state[c] = core.new_state(head, head)
        self.cq_state[c] = core.new_state(tail, int(ch.cq.hdr64[core.HEAD]))
        # Whatever the previous server left, nobody sleeps on our behalf.
        core.ring_end_sleep(ch.sq.hdr32)

    def pending(self, c: int) -> int:
        """Requests submitted to channel ``c`` and not yet released, read through the
        protocol's validated load (0 once the ring is corrupt)."""
        n = core.ring_ready(self.channels[c].sq.hdr64, self.sq_state[c], self.channels[c].sq.capacity)
        return max(int(n), 0)

    def queued(self, c: int) -> int:
        """Requests waiting in channel ``c`` as of the last validated look (no shared read)."""
        sq = self.sq_state[c]
        return 0 if sq[core.CORRUPT_FLAG] else int(sq[core.PEER_SEEN]) - int(sq[core.OWN])

    def check_tampered(self, c: int) -> str:
        """What a holder overwrote of channel ``c``'s words that only this side writes ('' if nothing).

        A finding marks the channel corrupt, like an invalid peer index: it is
        served no more and its owner re-creates it once the holder lets go.
        """
        if self.sq_state[c, core.CORRUPT_FLAG]:
            return ""
        own_sq, own_cq = int(self.sq_state[c, core.OWN]), int(self.cq_state[c, core.OWN])
        what = self.channels[c].tampered(sq_head=own_sq, cq_tail=own_cq)
        if what:
            self.sq_state[c, core.CORRUPT_FLAG] = 1
        return what

    def corrupt(self) -> np.ndarray:
        """Rows whose client broke the ring protocol (either ring)."""
        return np.flatnonzero(self.sq_state[:, core.CORRUPT_FLAG] | self.cq_state[:, core.CORRUPT_FLAG])
