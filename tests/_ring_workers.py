"""Child-process bodies for the cross-process ring tests (imported by spawned children).

The per-record work is compiled (numba) so a million records take seconds; every
loop is bounded by a count and by a CLOCK_MONOTONIC deadline, so a bug fails a
test instead of hanging it.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np
from numba import njit

from ringbuf import Channel, Consumer
from ringbuf import _core as core
from ringbuf._atomics import cpu_relax, monotonic_ns

WORDS = 40  # u64 words in a REQUEST slot (320 B)
_K = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(0x100000001B3)

OK, TIMEOUT, CORRUPT, OUT_OF_ORDER, BAD_CHECKSUM = 0, 1, 2, 3, 4


@njit(nogil=True, cache=True)
def _fill(row, seq):
    """Word 0 the sequence number, words 1..38 derived from it, word 39 their checksum."""
    row[0] = seq
    c = np.uint64(0xCBF29CE484222325) ^ seq
    for j in range(1, WORDS - 1):
        row[j] = seq * _K + np.uint64(j)
        c = (c ^ row[j]) * _PRIME
    row[WORDS - 1] = c


@njit(nogil=True, cache=True)
def _intact(row):
    c = np.uint64(0xCBF29CE484222325) ^ row[0]
    for j in range(1, WORDS - 1):
        c = (c ^ row[j]) * _PRIME
    return c == row[WORDS - 1]


@njit(nogil=True, cache=True)
def produce_burst(hdr64, hdr32, slots64, state, seq, count, max_batch, deadline_ns):
    """Publish records ``seq .. seq+count`` in batches of 1..max_batch, written in place.

    Returns ``(published, wake, status)`` as soon as a publish asks for a wake-up,
    so the caller can wake the consumer (``ring_wake``) before its timeout.
    """
    capacity = slots64.shape[0]
    mask = np.uint64(capacity - 1)
    done = 0
    while done < count:
        space = core.ring_space(hdr64, state, capacity)
        if space < 0:
            return done, False, CORRUPT
        if space == 0:
            if monotonic_ns() > deadline_ns:
                return done, False, TIMEOUT
            cpu_relax()
            continue
        k = min(space, count - done, np.random.randint(1, max_batch + 1))
        tail = state[core.OWN]
        for j in range(k):
            _fill(slots64[(tail + np.uint64(j)) & mask], np.uint64(seq + done + j))
        done += k
        if core.ring_publish(hdr64, hdr32, state, k):
            return done, True, OK
    return done, False, OK


@njit(nogil=True, cache=True)
def drain(hdr64, slots, state, out, out64, expected, total, spin_ns, deadline_ns):
    """Consume and verify until ``total`` arrived or the ring stays empty for ``spin_ns``.

    Records are copied out (ring_peek) before they are checked. Returns
    ``(next expected sequence number, status)``.
    """
    capacity = slots.shape[0]
    while expected < total:
        n = core.ring_spin_ready(hdr64, state, capacity, spin_ns)
        if n < 0:
            return expected, CORRUPT
        if n == 0:
            return expected, TIMEOUT if monotonic_ns() > deadline_ns else OK
        n = core.ring_peek(hdr64, slots, state, out, out.shape[0])
        if n < 0:
            return expected, CORRUPT
        for j in range(n):
            if out64[j, 0] != np.uint64(expected):
                return expected, OUT_OF_ORDER
            if not _intact(out64[j]):
                return expected, BAD_CHECKSUM
            expected += 1
        core.ring_release(hdr64, state, n)
    return expected, OK


def stress_producer(prefix: str, channel: str, total: int, pauses: bool, budget_s: float) -> dict[str, Any]:
    """Push ``total`` records; with ``pauses`` stop at random so the consumer falls asleep."""
    ch = Channel.attach(prefix, channel)
    state = core.new_state(int(ch.sq.hdr64[core.TAIL]), int(ch.sq.hdr64[core.HEAD]))
    slots64 = ch.sq.slots.view(np.uint64)
    rng = random.Random(os.getpid())
    deadline = time.monotonic_ns() + int(budget_s * 1e9)
    seq, wakeups_posted, pauses_taken, status = 0, 0, 0, OK
    while seq < total and status == OK and time.monotonic_ns() < deadline:
        burst = total - seq if not pauses else min(total - seq, rng.randint(1, 8000))
        while burst and status == OK:
            n, wake, status = produce_burst(ch.sq.hdr64, ch.sq.hdr32, slots64, state, seq, burst, 256, deadline)
            seq, burst = seq + n, burst - n
            if wake:
                core.ring_wake(ch.sq.hdr32)  # the consumer announced sleep: it must be woken
                wakeups_posted += 1
        if pauses and seq < total:
            pauses_taken += 1
            time.sleep(rng.uniform(0.0002, 0.002))
    del slots64
    ch.close()
    return {"sent": seq, "status": status, "wakeups_posted": wakeups_posted, "pauses": pauses_taken}


def stress_consumer(prefix: str, channel: str, total: int, sleep: bool, budget_s: float) -> dict[str, Any]:
    """Verify ``total`` records arrive once, in order, intact; sleep between bursts if ``sleep``."""
    ch = Channel.attach(prefix, channel)
    cons = Consumer(ch.sq)
    out = np.zeros((256, WORDS * 8), np.uint8)
    out64 = out.view(np.uint64)
    deadline = time.monotonic_ns() + int(budget_s * 1e9)
    spin_ns = 20_000 if sleep else 50_000_000
    expected, status, timeouts = 0, OK, 0
    while expected < total and status == OK:
        expected, status = drain(ch.sq.hdr64, ch.sq.slots, cons.state, out, out64, expected, total, spin_ns, deadline)
        # 5 s with nothing while the producer pauses <= 2 ms: a lost wake-up.
        if status == OK and expected < total and sleep and cons.wait(timeout=5.0, spin_us=0) == 0:
            timeouts += 1
            status = TIMEOUT
        if time.monotonic_ns() > deadline:
            status = TIMEOUT
    result = {"received": expected, "status": status, "sleeps": cons.sleeps, "timeouts": timeouts}
    del cons
    ch.close()
    return result


def idle_consumer(prefix: str, channel: str, conn: Any) -> None:
    """Tell the parent we are about to wait, then wait (sleeping) until woken."""
    ch = Channel.attach(prefix, channel)
    cons = Consumer(ch.sq)
    # Load the compiled kernels now (a first call costs ~0.1 s of CPU), so what is
    # measured below is the wait itself.
    cons.wait(timeout=0.0, spin_us=0)
    conn.send("waiting")
    t0 = os.times()
    n = cons.wait(timeout=30.0)
    t1 = os.times()
    conn.send({"ready": n, "cpu_s": (t1.user + t1.system) - (t0.user + t0.system), "sleeps": cons.sleeps})
    del cons
    ch.close()


def pingpong_server(prefix: str, channel: str, rounds: int) -> dict[str, Any]:
    """Answer ``rounds`` requests, one at a time, sleeping on the SQ before each."""
    import kernel_abi as abi
    from ringbuf import Producer

    ch = Channel.attach(prefix, channel)
    cons, prod = Consumer(ch.sq), Producer(ch.cq)
    answer = np.zeros(1, abi.RESPONSE)
    answered, status = 0, OK
    for _ in range(rounds):
        if cons.wait(timeout=5.0, spin_us=0) == 0:
            status = TIMEOUT
            break
        req = cons.consume(1)
        answer["request_id"] = req["request_id"]
        if prod.produce(answer) != 1:
            status = CORRUPT
            break
        answered += 1
    result = {"answered": answered, "status": status, "sleeps": cons.sleeps, "wakeups_posted": prod.wakeups_posted}
    del cons, prod
    ch.close()
    return result
