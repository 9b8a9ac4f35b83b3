"""The SPSC ring protocol, compiled: produce, peek, release, wait-spin.

Every function takes the ring as plain arrays so it can be called from Python
and inlined into other ``@njit`` code (the daemon's poll loop) alike:

- ``hdr64`` / ``hdr32``: the ring header seen as u64 / u32 words (shared);
- ``slots``: ``uint8[capacity, slot_size]`` (shared);
- ``state``: a private ``uint64[STATE_WORDS]`` array of the side that calls.

Neither side trusts the other's index. Each keeps its own index privately
(the consumer its head, the producer its tail), only ever stores it to shared
memory, and validates the other side's index on every load: it may never move
backwards and ``0 <= tail - head <= capacity`` must hold. A violation marks
the ring corrupt in the caller's private state; from then on every call
answers ``CORRUPT`` and touches no slot, so garbage indices can never cause an
out-of-bounds access (slot = index & mask is always in range anyway).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernel_abi import ABI_VERSION, RING_HEADER, RING_MAGIC, RING_NEED_WAKEUP

from ._atomics import full_fence, load_acquire, monotonic_ns, spin_pause, store_release
from ._futex import EINTR, atomic_add_u32, futex_wait, futex_wake

_U64 = 8
_U32 = 4
MAGIC = RING_HEADER.fields["magic"][1] // _U64
# abi_version is the low (little-endian) half of this u64 word.
ABI_WORD = RING_HEADER.fields["abi_version"][1] // _U64
assert RING_HEADER.fields["abi_version"][1] % _U64 == 0
TAIL = RING_HEADER.fields["tail"][1] // _U64
HEAD = RING_HEADER.fields["head"][1] // _U64
FLAGS = RING_HEADER.fields["flags"][1] // _U32
FULL_EVENTS = RING_HEADER.fields["full_events"][1] // _U64
PRODUCED = RING_HEADER.fields["produced"][1] // _U64
CONSUMED = RING_HEADER.fields["consumed"][1] // _U64
CORRUPT_EVENTS = RING_HEADER.fields["corrupt_events"][1] // _U64
WAKE_SEQ = RING_HEADER.fields["wake_seq"][1] // _U32

# Private state words. For a consumer OWN is its head and PEER_SEEN the last
# tail it accepted; for a producer OWN is its tail and PEER_SEEN the last head.
OWN = 0
PEER_SEEN = 1
CORRUPT_FLAG = 2
SLEEPS = 3  # times this side slept on the wake-up word
STATE_WORDS = 4

#: Returned instead of a count once the ring is known to be corrupt.
CORRUPT = -1

_NEED_WAKEUP = np.uint32(RING_NEED_WAKEUP)
_RING_MAGIC = np.uint64(RING_MAGIC)
_ABI_VERSION = np.uint64(ABI_VERSION)


def new_state(own_index: int, peer_index: int) -> np.ndarray:
    """Private state for a side whose index is ``own_index``."""
    state = np.zeros(STATE_WORDS, np.uint64)
    state[OWN] = own_index
    state[PEER_SEEN] = peer_index
    return state


@njit(nogil=True, cache=True, inline="always")
def _mark_corrupt(hdr64, state):
    """Consumer side: remember the corruption and count it in the header."""
    state[CORRUPT_FLAG] = 1
    hdr64[CORRUPT_EVENTS] += np.uint64(1)
    return CORRUPT


@njit(nogil=True, cache=True, inline="always")
def _mark_corrupt_private(state):
    """Producer side: corrupt_events sits in the consumer's block, which only the
    consumer writes (a second writer would race its increments), so the producer
    keeps the verdict in its private state only."""
    state[CORRUPT_FLAG] = 1
    return CORRUPT


@njit(nogil=True, cache=True)
def ring_ready(hdr64, state, capacity):
    """Consumer: records published and not yet released, or CORRUPT."""
    if state[CORRUPT_FLAG]:
        return CORRUPT
    # Attach validated the header once; a live segment can still be scribbled
    # on, so block 0 is re-checked on every load (it is never written after
    # creation, so the line stays shared in both caches and the check is cheap).
    if hdr64[MAGIC] != _RING_MAGIC or (hdr64[ABI_WORD] & np.uint64(0xFFFFFFFF)) != _ABI_VERSION:
        return _mark_corrupt(hdr64, state)
    tail = load_acquire(hdr64, TAIL)
    head = state[OWN]
    # u64 arithmetic: a tail behind head wraps to a huge difference.
    if tail < state[PEER_SEEN] or tail - head > np.uint64(capacity):
        return _mark_corrupt(hdr64, state)
    state[PEER_SEEN] = tail
    return np.int64(tail - head)


_NO_WRAP = np.uint64(0xFFFFFFFFFFFFFFFF)  # the mask of a plain (non-ring) array of rows


@intrinsic
def _copy_bytes(typingctx, dst, dst_offset, src, src_offset, nbytes):
    """``memcpy(dst.data + dst_offset, src.data + src_offset, nbytes)`` (byte offsets; the caller bounds them)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)):
        return None

    def codegen(context, builder, signature, args):
        dst_ty, _, src_ty, _, _ = signature.args
        d, d_off, s, s_off, size = args
        d_ptr = builder.bitcast(context.make_array(dst_ty)(context, builder, d).data, cgutils.voidptr_t)
        s_ptr = builder.bitcast(context.make_array(src_ty)(context, builder, s).data, cgutils.voidptr_t)
        cgutils.raw_memcpy(builder, builder.gep(d_ptr, [d_off]), builder.gep(s_ptr, [s_off]), size, 1)
        return context.get_dummy_value()

    return types.void(dst, types.int64, src, types.int64, types.int64), codegen


@njit(nogil=True, cache=True)
def _copy_rows(src, src_first, src_mask, dst, dst_first, dst_mask, n):
    """``dst[(dst_first + j) & dst_mask] = src[(src_first + j) & src_mask]`` for ``j < n``.

    One ``memcpy`` per run of rows that wraps around neither array's end (at most three
    for a ring): 256 rows of 320 bytes took ~3 µs against ~12.5 µs moving 64-bit words
    one by one (which numba does not vectorise here), and a row at a time in bytes was
    slower still. Both arrays must hold rows of the same width, contiguously.
    """
    width = src.shape[1]
    rows_contiguous = src.strides[0] == width and dst.strides[0] == width
    if width == 0 or dst.shape[1] != width or src.strides[1] != 1 or dst.strides[1] != 1 or not rows_contiguous:
        raise ValueError("rows to copy must be contiguous byte rows of one width (uint8[n, slot_size])")
    if n <= 0:
        return
    if (src_mask == _NO_WRAP and src_first + np.uint64(n) > np.uint64(src.shape[0])) or (
        dst_mask == _NO_WRAP and dst_first + np.uint64(n) > np.uint64(dst.shape[0])
    ):
        raise ValueError("more rows to copy than the array holds: n must be at most its length")
    j, end = np.uint64(0), np.uint64(n)
    while j < end:
        s = (src_first + j) & src_mask
        d = (dst_first + j) & dst_mask
        # The rows left before either array's end (a plain array's mask is all ones: it never wraps).
        run = min(end - j - np.uint64(1), src_mask - s, dst_mask - d) + np.uint64(1)
        _copy_bytes(dst, np.int64(d) * width, src, np.int64(s) * width, np.int64(run) * width)
        j += run


@njit(nogil=True, cache=True)
def copy_from_ring(slots, first, out, n):
    """``out[j] = slots[(first + j) & mask]`` for ``j < n``."""
    _copy_rows(slots, first, np.uint64(slots.shape[0] - 1), out, np.uint64(0), _NO_WRAP, n)


@njit(nogil=True, cache=True)
def copy_into_ring(records, slots, first, n):
    """``slots[(first + j) & mask] = records[j]`` for ``j < n``."""
    _copy_rows(records, np.uint64(0), _NO_WRAP, slots, first, np.uint64(slots.shape[0] - 1), n)


@njit(nogil=True, cache=True)
def ring_peek(hdr64, slots, state, out, max_n):
    """Consumer: copy up to ``max_n`` ready records into private ``out``.

    Copies, then returns the count (or CORRUPT); does not release. The copy
    comes first so that what is later validated is what stays: a producer
    rewriting a slot after this cannot change it.
    """
    capacity = slots.shape[0]
    n = ring_ready(hdr64, state, capacity)
    if n <= 0:
        return n
    n = min(n, max_n, out.shape[0])
    copy_from_ring(slots, state[OWN], out, n)
    return n


@njit(nogil=True, cache=True)
def ring_release(hdr64, state, n):
    """Consumer: hand ``n`` slots back to the producer, one index store."""
    head = state[OWN] + np.uint64(n)
    state[OWN] = head
    # The producer must see our reads of those slots finished before it sees
    # the head that lets it overwrite them.
    store_release(hdr64, HEAD, head)
    hdr64[CONSUMED] += np.uint64(n)


@njit(nogil=True, cache=True)
def ring_space(hdr64, state, capacity):
    """Producer: free slots, or CORRUPT."""
    if state[CORRUPT_FLAG]:
        return CORRUPT
    head = load_acquire(hdr64, HEAD)
    tail = state[OWN]
    if head < state[PEER_SEEN] or tail - head > np.uint64(capacity):
        return _mark_corrupt_private(state)
    state[PEER_SEEN] = head
    return np.int64(capacity) - np.int64(tail - head)


@njit(nogil=True, cache=True)
def ring_publish(hdr64, hdr32, state, n):
    """Producer: make ``n`` written slots visible; True if the consumer sleeps.

    The caller must ``ring_wake`` the consumer when this returns True (the
    daemon first publishes every channel's answers, then wakes).
    """
    tail = state[OWN] + np.uint64(n)
    state[OWN] = tail
    # The consumer must see the slot contents before it sees the tail.
    store_release(hdr64, TAIL, tail)
    hdr64[PRODUCED] += np.uint64(n)
    # Pairs with the consumer's fence between setting NEED_WAKEUP and
    # re-reading the tail: at least one of us sees the other's store.
    full_fence()
    return (load_acquire(hdr32, FLAGS) & _NEED_WAKEUP) != 0


@njit(nogil=True, cache=True)
def ring_wake(hdr32):
    """Producer: wake a consumer that announced sleep (bump wake_seq, FUTEX_WAKE)."""
    atomic_add_u32(hdr32, WAKE_SEQ, 1)
    futex_wake(hdr32, WAKE_SEQ, 1)


@njit(nogil=True, cache=True)
def ring_commit(hdr64, hdr32, state, n):
    """Producer: publish ``n`` written slots and wake a sleeping consumer; True if woken."""
    if ring_publish(hdr64, hdr32, state, n):
        ring_wake(hdr32)
        return True
    return False


@njit(nogil=True, cache=True)
def ring_nudge(hdr64, hdr32, state):
    """Producer: wake a sleeping consumer that has records pending; True if woken.

    For a consumer that stopped taking for want of room elsewhere (the daemon,
    when this side's completion ring was full): call after making that room.
    """
    if state[CORRUPT_FLAG] or state[OWN] == load_acquire(hdr64, HEAD):
        return False
    return ring_commit(hdr64, hdr32, state, 0)


@njit(nogil=True, cache=True)
def ring_produce(hdr64, hdr32, slots, state, records, n):
    """Producer: copy up to ``n`` rows of ``records`` (uint8[n, slot_size]) and publish.

    Returns ``(accepted, woke)``: accepted is 0 on a full ring (nothing is
    overwritten) and CORRUPT on a corrupt one; woke says the consumer slept
    and was woken.
    """
    capacity = slots.shape[0]
    space = ring_space(hdr64, state, capacity)
    if space < 0:
        return space, False
    k = min(n, space)
    if k == 0:
        if n > 0:
            hdr64[FULL_EVENTS] += np.uint64(1)
        return 0, False
    copy_into_ring(records, slots, state[OWN], k)
    return k, ring_commit(hdr64, hdr32, state, k)


@njit(nogil=True, cache=True)
def ring_spin_ready(hdr64, state, capacity, spin_ns):
    """Consumer: spin up to ``spin_ns`` for a record; the ready count (0: none)."""
    start = monotonic_ns()
    while True:
        n = ring_ready(hdr64, state, capacity)
        spun = monotonic_ns() - start
        if n != 0 or spun >= spin_ns:
            return n
        spin_pause(spun)


@njit(nogil=True, cache=True, inline="always")
def ring_announce_sleep(hdr32):
    """Consumer: set NEED_WAKEUP; the wake_seq value to sleep on.

    wake_seq is loaded first: a producer that sees the flag bumps wake_seq
    after this load, so a FUTEX_WAIT on the loaded value cannot miss it. The
    caller fences before re-checking the tail.
    """
    seq = load_acquire(hdr32, WAKE_SEQ)
    store_release(hdr32, FLAGS, load_acquire(hdr32, FLAGS) | _NEED_WAKEUP)
    return seq


@njit(nogil=True, cache=True)
def ring_prepare_sleep(hdr64, hdr32, state, capacity):
    """Consumer: announce sleep, then re-check. Sleep only if this returns 0.

    A non-zero answer means records arrived (or corruption) and the caller
    must ``ring_end_sleep`` instead of sleeping.
    """
    ring_announce_sleep(hdr32)
    # Pairs with the producer's fence after publishing (see ring_publish).
    full_fence()
    return ring_ready(hdr64, state, capacity)


@njit(nogil=True, cache=True)
def ring_wait(hdr64, hdr32, state, capacity, spin_ns, timeout_ns):
    """Consumer: the ready count once records arrive; 0 after ``timeout_ns`` or a signal.

    Spins up to ``spin_ns``, then sleeps on wake_seq (FUTEX_WAIT) with the
    NEED_WAKEUP handshake; all of it compiled, so a wake-up runs no Python.
    Returns CORRUPT once the ring is corrupt.
    """
    n = ring_spin_ready(hdr64, state, capacity, spin_ns)
    if n != 0:
        return n
    deadline = monotonic_ns() + timeout_ns
    while True:
        seq = ring_announce_sleep(hdr32)
        full_fence()  # pairs with the producer's fence after publishing (ring_publish)
        n = ring_ready(hdr64, state, capacity)
        if n == 0:
            remaining = deadline - monotonic_ns()
            if remaining <= 0:
                ring_end_sleep(hdr32)
                return 0
            state[SLEEPS] += np.uint64(1)
            err = futex_wait(hdr32, WAKE_SEQ, seq, remaining)
            n = ring_ready(hdr64, state, capacity)
            if n == 0 and err == EINTR:
                ring_end_sleep(hdr32)
                return 0
        ring_end_sleep(hdr32)
        if n != 0:
            return n


@njit(nogil=True, cache=True)
def ring_end_sleep(hdr32):
    """Consumer: withdraw NEED_WAKEUP; producers stop posting."""
    store_release(hdr32, FLAGS, load_acquire(hdr32, FLAGS) & ~_NEED_WAKEUP)
