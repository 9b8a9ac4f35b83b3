"""A client's round trip in compiled code: stamp, publish, wait, reap, in one call.

``Client.predict`` and ``Client.predict_records`` build their REQUEST records
in preallocated buffers and hand them here; everything from stamping the ids
and submit time to copying the answers out runs compiled (no Python, no
per-call allocation), through ringbuf's public per-ring functions.

The wait spins only while an answer is expected sooner than a wake-up of ours
would cost (the answer time is learnt: twice its running average, at most the
spin bound), then sleeps on the completion ring's wake-up word: a caller
pacing slower than the daemon answers burns no CPU, a back-to-back caller
never sleeps.

A call returns after at most ``WAIT_SLICE_NS`` without an answer (``AGAIN``):
the Python caller checks for a signal (Ctrl-C) and the deadline (the
``DEADLINE`` word), then calls again with the same ``first_id`` to carry on
where it stopped. A new ``first_id`` starts a new batch: the compiled code
resets the batch's words itself, so the Python side of a round trip is one call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ringbuf import monotonic_ns, ring_nudge, ring_peek, ring_produce, ring_release, ring_wait

DONE, AGAIN, CORRUPT = 0, 1, 2
# Words of the ``progress`` array (per client; DROPPED counts over the client's life, the rest per batch)
# and of the ``learn`` array (per client).
SENT, GOT, DROPPED, FIRST_ID, DEADLINE = 0, 1, 2, 3, 4
PROGRESS_WORDS = 5
ANSWER_NS, SPIN_MAX_NS = 0, 1
LEARN_WORDS = 2
WAIT_SLICE_NS = 20_000_000
LEARN_MAX_BATCH = 4
_ID, _SUBMIT_NS = 0, 3  # u64 words of a record: request_id (both kinds), submit_ns (REQUEST)


def new_learn(spin_max_ns: int) -> np.ndarray:
    """A client's learnt state: the answer time starts at half the spin bound."""
    learn = np.zeros(LEARN_WORDS, np.int64)
    learn[SPIN_MAX_NS] = spin_max_ns
    learn[ANSWER_NS] = spin_max_ns // 2
    return learn


@njit(nogil=True, cache=True)
def spin_window(learn):
    """Spin for twice the answer time learnt (at most the bound); not at all past twice the bound.

    An answer measured after a sleep includes our own wake-up: hence the slack.
    """
    if learn[ANSWER_NS] > 2 * learn[SPIN_MAX_NS]:
        return 0
    return min(2 * learn[ANSWER_NS], learn[SPIN_MAX_NS])


@njit(nogil=True, cache=True)
def exchange(
    sq_hdr64, sq_hdr32, sq_slots, sq_state, cq_hdr64, cq_hdr32, cq_slots, cq_state,
    requests, responses, done, scratch, progress, learn, first_id, timeout_ns,
):  # fmt: skip
    """Publish ``requests`` (uint8[n, slot]) and collect their answers into ``responses`` rows, in order.

    On the first call for a batch (``first_id`` not the one in ``progress``)
    the records get ids first_id.. and the submit time, and the batch's
    deadline is set ``timeout_ns`` from now. Answers for other ids are dropped
    (counted in DROPPED). Returns DONE (every answer in), AGAIN (a wait slice
    passed, or the deadline: the caller decides) or CORRUPT.
    """
    n = requests.shape[0]
    started = monotonic_ns()
    if progress[FIRST_ID] != first_id:
        progress[SENT] = progress[GOT] = 0
        progress[FIRST_ID] = first_id
        progress[DEADLINE] = started + timeout_ns
        req64 = requests.view(np.uint64)
        for i in range(n):
            req64[i, _ID] = np.uint64(first_id + i)
            req64[i, _SUBMIT_NS] = np.uint64(started)
            done[i] = 0
    first = np.uint64(first_id)
    slice_end = min(started + WAIT_SLICE_NS, progress[DEADLINE])
    spin = spin_window(learn)
    sc64 = scratch.view(np.uint64)
    while True:
        if progress[SENT] < n:
            # Spinning after waking the daemon is fine: ring_wait's spin yields the CPU (spin_pause).
            k, _ = ring_produce(
                sq_hdr64, sq_hdr32, sq_slots, sq_state, requests[progress[SENT] :], n - progress[SENT]
            )
            if k < 0:
                return CORRUPT
            progress[SENT] += k
        m = ring_peek(cq_hdr64, cq_slots, cq_state, scratch, scratch.shape[0])
        if m < 0:
            return CORRUPT
        if m > 0:
            for j in range(m):
                idx = sc64[j, _ID] - first  # u64: ids below first wrap to huge
                if idx < np.uint64(n) and done[idx] == 0:
                    responses[idx, :] = scratch[j, :]
                    done[idx] = 1
                    progress[GOT] += 1
                else:  # a late answer to an earlier call, or a duplicate after a daemon restart
                    progress[DROPPED] += 1
            ring_release(cq_hdr64, cq_state, m)
            ring_nudge(sq_hdr64, sq_hdr32, sq_state)  # the daemon may have stopped for want of CQ room
        if progress[GOT] == n:
            if n <= LEARN_MAX_BATCH:  # a big batch's time says nothing about the next single answer
                sample = min(monotonic_ns() - started, 4 * learn[SPIN_MAX_NS])  # one preemption must not rule
                learn[ANSWER_NS] += (sample - learn[ANSWER_NS]) // 8
            return DONE
        now = monotonic_ns()
        if now >= slice_end:
            return AGAIN
        if ring_wait(cq_hdr64, cq_hdr32, cq_state, cq_slots.shape[0], spin, slice_end - now) < 0:
            return CORRUPT
