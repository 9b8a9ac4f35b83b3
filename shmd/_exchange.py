"""A client's round trip in compiled code: stamp, publish, wait, reap, in one call.

``Client.predict`` and ``Client.predict_records`` build their REQUEST records
in preallocated buffers and hand them here; everything from stamping the ids
and submit time to copying the answers out runs compiled (no Python, no
per-call allocation), through ringbuf's public per-ring functions.

The wait spins only while an answer is expected sooner than a wake-up of ours
would cost (the answer time is learnt: twice its running average, at most the
spin bound), then sleeps on the completion ring's wake-up word: a caller
pacing slower than the daemon answers burns no CPU, a back-to-back caller
never sleeps. A batch (more than ``LEARN_MAX_BATCH`` records) spins for its
own expected time instead, learnt per record from earlier batches, plus the
bound: sizing it from single calls made a 256-record batch (~130 µs in the
daemon) sleep on the completion ring and wait for a wake-up after most
passes. (A timed nap until shortly before the answers are due, NVMe's hybrid
polling, was tried and dropped: a timer's wake-up here came 50-100 µs late,
more than the batch's spin it saved.)

A batch's ``STAMP`` word, when not 0, is also written into each request's
header as it is published (model_id, abi_version, payload_len: ``header_stamp``),
so ``predict_records`` leaves even that to compiled code.

A call returns after at most ``WAIT_SLICE_NS`` without an answer (``AGAIN``):
the Python caller checks for a signal (Ctrl-C) and the deadline (the
``DEADLINE`` word), then calls again with the same ``first_id`` to carry on
where it stopped. A new ``first_id`` starts a new batch: the compiled code
resets the batch's words itself, so the Python side of a round trip is one call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST
from ringbuf import monotonic_ns, ring_nudge, ring_peek, ring_produce, ring_release, ring_wait

DONE, AGAIN, CORRUPT = 0, 1, 2
# Words of a client's ``words`` array: the batch's (reset by a new first id; STAMP set by the caller
# for every batch), then the client's own (DROPPED counts over the client's life; ANSWER_NS, SPIN_MAX_NS
# and RECORD_NS, a batch's time per record, are the spin window's learnt state).
SENT, GOT, FIRST_ID, DEADLINE, DROPPED, ANSWER_NS, SPIN_MAX_NS, RECORD_NS, STAMP = range(9)
WORDS = 9
WAIT_SLICE_NS = 20_000_000
LEARN_MAX_BATCH = 4
_ID, _SUBMIT_NS = 0, 3  # u64 words of a record: request_id (both kinds), submit_ns (REQUEST)
_MODEL_ABI, _PAYLOAD_LEN = 2, 4  # u32 words of a REQUEST: model_id | abi_version << 16, payload_len
assert REQUEST.fields["model_id"][1] == 4 * _MODEL_ABI and REQUEST.fields["abi_version"][1] == 4 * _MODEL_ABI + 2
assert REQUEST.fields["payload_len"][1] == 4 * _PAYLOAD_LEN


def header_stamp(model: int) -> int:
    """The ``STAMP`` word that makes the exchange write ``model``'s request header fields."""
    return PAYLOADS[model].itemsize << 32 | ABI_VERSION << 16 | model


def new_words(spin_max_ns: int) -> np.ndarray:
    """A client's words: no batch yet; the answer time starts at half the spin bound."""
    words = np.zeros(WORDS, np.int64)
    words[SPIN_MAX_NS] = spin_max_ns
    words[ANSWER_NS] = spin_max_ns // 2
    return words


@njit(nogil=True, cache=True)
def spin_window(words):
    """Spin for twice the answer time learnt (at most the bound); not at all past twice the bound.

    An answer measured after a sleep includes our own wake-up: hence the slack.
    """
    if words[ANSWER_NS] > 2 * words[SPIN_MAX_NS]:
        return 0
    return min(2 * words[ANSWER_NS], words[SPIN_MAX_NS])


@njit(nogil=True, cache=True)
def wait_spin(words, n, started, now):
    """How long to spin for answers now: a single call's window, or until a batch's expected
    time plus the spin bound (nothing, for a client that may not spin). Spinning yields the CPU
    after a few µs (``spin_pause``), so a daemon woken onto our CPU still runs."""
    if n <= LEARN_MAX_BATCH or words[SPIN_MAX_NS] == 0:
        return spin_window(words)
    return max(started + words[RECORD_NS] * n - now, 0) + words[SPIN_MAX_NS]


@njit(nogil=True, cache=True)
def _learn(words, n, took_ns):
    """Learn from a batch's time: the single-call answer time, or a batch's time per record."""
    if n == 0:  # an empty exchange (attach) answers nothing
        return
    if n <= LEARN_MAX_BATCH:  # a big batch's time says nothing about the next single answer
        sample = min(took_ns, 4 * words[SPIN_MAX_NS])  # one preemption must not rule
        words[ANSWER_NS] += (sample - words[ANSWER_NS]) // 8
    else:
        per = took_ns // n
        if words[RECORD_NS] == 0:
            words[RECORD_NS] = per
        else:  # one preempted batch must not rule either
            words[RECORD_NS] += (min(per, 4 * words[RECORD_NS]) - words[RECORD_NS]) // 8


@njit(nogil=True, cache=True)
def exchange(
    sq_hdr64, sq_hdr32, sq_slots, sq_state, cq_hdr64, cq_hdr32, cq_slots, cq_state,
    requests, responses, scratch, words, first_id, timeout_ns,
):  # fmt: skip
    """Publish ``requests`` (uint8[n, slot]) and collect their answers into ``responses`` rows, in order.

    On the first call for a batch (``first_id`` not the one in ``words``) the
    batch's deadline is set ``timeout_ns`` from now; rows get ids first_id..
    and the submit time as they are published. A response row counts as
    answered once it holds its id: answers for other ids, and repeats, are
    dropped (counted in DROPPED). Returns DONE (every answer in), AGAIN (a
    wait slice passed, or the deadline: the caller decides) or CORRUPT.
    """
    n = requests.shape[0]
    started = monotonic_ns()
    first = np.uint64(first_id)
    res64 = responses.view(np.uint64)
    if words[FIRST_ID] != first_id:
        words[SENT] = words[GOT] = 0
        words[FIRST_ID] = first_id
        words[DEADLINE] = started + timeout_ns
        for i in range(n):
            res64[i, _ID] = np.uint64(0)  # not answered (ids are never 0: they start odd, 62 bits)
    slice_end = min(started + WAIT_SLICE_NS, words[DEADLINE])
    sc64 = scratch.view(np.uint64)
    req64 = requests.view(np.uint64)
    req32 = requests.view(np.uint32)
    stamp = words[STAMP]
    while True:
        if words[SENT] < n:
            for i in range(words[SENT], n):
                req64[i, _ID] = first + np.uint64(i)
                req64[i, _SUBMIT_NS] = np.uint64(started)
                if stamp != 0:
                    req32[i, _MODEL_ABI] = np.uint32(stamp & 0xFFFFFFFF)
                    req32[i, _PAYLOAD_LEN] = np.uint32(stamp >> 32)
            # Spinning after waking the daemon is fine: ring_wait's spin yields the CPU (spin_pause).
            k, _ = ring_produce(
                sq_hdr64, sq_hdr32, sq_slots, sq_state, requests[words[SENT] :], n - words[SENT]
            )
            if k < 0:
                return CORRUPT
            words[SENT] += k
        m = ring_peek(cq_hdr64, cq_slots, cq_state, scratch, scratch.shape[0])
        if m < 0:
            return CORRUPT
        if m > 0:
            for j in range(m):
                idx = sc64[j, _ID] - first  # u64: ids below first wrap to huge
                if idx < np.uint64(n) and res64[idx, _ID] == np.uint64(0):
                    for w in range(res64.shape[1]):  # by words: a byte-wise row copy took 8.5 µs per 256
                        res64[idx, w] = sc64[j, w]
                    words[GOT] += 1
                else:  # a late answer to an earlier call, or a duplicate after a daemon restart
                    words[DROPPED] += 1
            ring_release(cq_hdr64, cq_state, m)
            ring_nudge(sq_hdr64, sq_hdr32, sq_state)  # the daemon may have stopped for want of CQ room
        if words[GOT] == n:
            _learn(words, n, monotonic_ns() - started)
            return DONE
        now = monotonic_ns()
        if now >= slice_end:
            return AGAIN
        spin = wait_spin(words, n, started, now)
        if ring_wait(cq_hdr64, cq_hdr32, cq_state, cq_slots.shape[0], spin, slice_end - now) < 0:
            return CORRUPT


# ``describe``'s arrays, in ``exchange``'s order: (dtype, dimensions). Each is a row of three words in
# the descriptor: address, length, row length in bytes (0 for one dimension).
_DESCRIBED = (
    (np.uint64, 1), (np.uint32, 1), (np.uint8, 2), (np.uint64, 1),  # submission ring: hdr64, hdr32, slots, state
    (np.uint64, 1), (np.uint32, 1), (np.uint8, 2), (np.uint64, 1),  # completion ring: the same
    (np.uint8, 2), (np.uint8, 2), (np.uint8, 2), (np.int64, 1),  # requests, responses, scratch, words
)


def describe(*arrays: np.ndarray) -> np.ndarray:
    """The descriptor of ``exchange``'s twelve arrays, for ``exchange_described``.

    It holds their addresses only: the caller must keep the arrays alive as long as the descriptor.
    """
    if len(arrays) != len(_DESCRIBED):
        raise TypeError(f"describe takes exchange's {len(_DESCRIBED)} arrays: got {len(arrays)}")
    desc = np.zeros((len(arrays), 3), np.int64)
    for k, (a, (dtype, ndim)) in enumerate(zip(arrays, _DESCRIBED, strict=True)):
        if a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous or not a.flags.writeable:
            raise TypeError(
                f"exchange array {k}: dtype={a.dtype} ndim={a.ndim} contiguous={a.flags.c_contiguous} "
                f"writeable={a.flags.writeable}, expected a writeable contiguous {np.dtype(dtype)} of {ndim} dimensions"
            )
        desc[k] = a.ctypes.data, a.shape[0], a.shape[1] if ndim == 2 else 0
    return desc


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a ``void*``, for ``carray``."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@njit(nogil=True, cache=True, inline="always")
def _flat(desc, k, dtype):
    return carray(_pointer(desc[k, 0]), desc[k, 1], dtype)


@njit(nogil=True, cache=True, inline="always")
def _rows(desc, k):
    return carray(_pointer(desc[k, 0]), (desc[k, 1], desc[k, 2]), np.uint8)


@njit(nogil=True, cache=True, inline="always")
def _bytes(desc, k):
    return carray(_pointer(desc[k, 0]), desc[k, 1] * desc[k, 2], np.uint8)


@njit(nogil=True, cache=True)
def exchange_batch(desc, requests, responses, first_id, timeout_ns):
    """``exchange`` on the rings, scratch and words ``desc`` describes (``describe``), and on
    ``requests`` and ``responses`` given as the bytes of whole records (1-d uint8, contiguous and
    writeable: a record array's ``view(np.uint8)``), cut into rows of each ring's slot size.

    ``predict_records`` passes its caller's arrays this way: a byte view and numba's unboxing of
    it cost less than describing them (``ndarray.ctypes`` alone took ~1.5 µs an array).
    """
    return exchange(
        _flat(desc, 0, np.uint64), _flat(desc, 1, np.uint32), _rows(desc, 2), _flat(desc, 3, np.uint64),
        _flat(desc, 4, np.uint64), _flat(desc, 5, np.uint32), _rows(desc, 6), _flat(desc, 7, np.uint64),
        requests.reshape(requests.shape[0] // desc[2, 2], desc[2, 2]),
        responses.reshape(responses.shape[0] // desc[6, 2], desc[6, 2]),
        _rows(desc, 10), _flat(desc, 11, np.int64), first_id, timeout_ns,
    )  # fmt: skip


@njit(nogil=True, cache=True)
def exchange_described(desc, first_id, timeout_ns):
    """``exchange`` on the arrays ``desc`` describes (``describe``).

    One array to unbox instead of twelve: ``Client.predict``'s call costs ~0.5 µs less warm
    and a few µs less after the CPU idled (fewer objects and less of numba's unboxing code
    to bring back into the caches).
    """
    return exchange_batch(desc, _bytes(desc, 8), _bytes(desc, 9), first_id, timeout_ns)


def described_entry(desc: np.ndarray) -> Any:
    """``exchange_described`` compiled for ``desc``'s type, to be called as ``entry(desc, first_id, timeout_ns)``
    without numba's dispatcher, which types every argument on every call (~5 of the ~10 µs an empty
    call cost after the CPU idled 1 ms here, 0.6 of 1.1 µs warm). Only valid for descriptors of the same
    type (every ``describe``d one) and Python ints."""
    return exchange_described.compile((typeof(desc), types.int64, types.int64))


_BYTES = types.Array(types.uint8, 1, "C")


def batch_entry(desc: np.ndarray) -> Any:
    """``exchange_batch`` compiled for ``desc``'s type, called as ``entry(desc, requests, responses, first_id,
    timeout_ns)`` without the dispatcher (as ``described_entry``): ``requests`` and ``responses`` must be
    writeable contiguous 1-d uint8 arrays (nothing checks them on the way in)."""
    return exchange_batch.compile((typeof(desc), _BYTES, _BYTES, types.int64, types.int64))
