"""When ``step`` returns to Python for housekeeping: in a quiet moment, not right after an answer.

The Python housekeeping (heartbeat, gauges, control; ~0.2 ms) runs between two ``step``
calls. A client's wake-up puts the daemon on that client's CPU, so housekeeping run right
after publishing an answer made the woken client wait behind it (at 10 ms gaps every other
request). Driven on rings of the test's own (``test_pass._Pass``), without a daemon.
"""

from __future__ import annotations

import threading
import time

from kernel_abi import RING_NEED_WAKEUP, ModelId
from ringbuf import _core as core
from shmd import _loop, _pass
from shmd._pass_layout import LOOP_BUSY_RETURNS, LOOP_SLEEPS

from .test_pass import _Pass, _requests

LONG_SLEEP_NS = 30_000_000_000  # no timeout ends the first sleep: only the request does
SHORT_SLEEP_NS = 1_000_000_000  # a sleep nothing ends returns (a call counted beyond the bound: 20 periods a second)
STALL_S = 10.0  # generous: the call lasts ~15 ms; a quiet sleep that never ends lasts 30 s


def test_a_due_housekeeping_waits_for_a_sleep_that_nothing_ends(prefix: str) -> None:
    """A request that wakes ``step`` once housekeeping is due is answered, then the loop sleeps
    again (briefly) and returns only when that sleep ends with nothing to do."""
    p = _Pass(prefix, "compiled")
    try:
        _pass.set_wait(p.batch, 0, 0)
        assert _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, 0) == 0  # compiled now, not below
        _pass.set_wait(p.batch, 0, LONG_SLEEP_NS)
        flags = p.channels[0].sq.hdr32
        problems: list[str] = []

        def client() -> None:
            deadline = time.monotonic() + STALL_S
            while not flags[core.FLAGS] & RING_NEED_WAKEUP:  # the step call sleeps
                if time.monotonic() > deadline:
                    problems.append("step never went to sleep")
                    return
                time.sleep(0.001)
            # Asleep since after the call began: this request comes a housekeeping period later.
            time.sleep(1.5 * _loop.HOUSEKEEPING_NS / 1e9)
            p.sq[0].produce(_requests(ModelId.WORKLOAD, [1]))

        waker = threading.Thread(target=client)
        waker.start()
        t0 = time.monotonic()
        n = _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, 0)
        took = time.monotonic() - t0
        waker.join(STALL_S)
        assert not problems, problems
        assert n == 0 and p.cq[0].ready() == 1, "the request is answered before housekeeping's turn"
        loop = p.counters.loop
        # The long sleep the request ended, then the quiet one that nothing ended.
        assert loop[LOOP_SLEEPS] == 2, f"{loop[LOOP_SLEEPS]} sleeps: housekeeping did not wait for a quiet moment"
        assert loop[LOOP_BUSY_RETURNS] == 0
        assert took < STALL_S, f"step returned after {took:.1f} s: the quiet sleep is not short"
    finally:
        p.close()


def test_wake_ups_alone_never_end_a_step_call(prefix: str) -> None:
    """A paced caller wakes the sleeping loop once a request; those wake-ups must not end the
    ``step`` call (only housekeeping's period or a run of MAX_INNER_PASSES passes with no sleep
    between them may), or a request the loop was just woken for waits behind Python.

    Each request goes only once the loop sleeps (NEED_WAKEUP set), so each is a wake-up and a
    pass. The loop is driven as the daemon drives it: ``step`` again whenever it returns. Every
    call that did not run ~HOUSEKEEPING_NS returned early (it used to return after
    MAX_INNER_PASSES // 2 requests); the bound below only loosens when the machine is slow.
    """
    requests = 4 * _loop.MAX_INNER_PASSES
    p = _Pass(prefix, "compiled")
    try:
        _pass.set_wait(p.batch, 0, 0)
        p.sq[0].produce(_requests(ModelId.WORKLOAD, [requests + 1]))  # the client's calls are compiled now too
        assert _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, 0) == 0  # compiled now, not below
        assert len(p.cq[0].consume(1)) == 1
        _pass.set_wait(p.batch, 0, SHORT_SLEEP_NS)  # the call in hand when the client is done ends soon
        flags = p.channels[0].sq.hdr32
        batch = _requests(ModelId.WORKLOAD, list(range(1, requests + 1)))
        answered: list[int] = []
        problems: list[str] = []
        done = threading.Event()
        done_at: list[int] = []

        def client() -> None:
            deadline = time.monotonic() + STALL_S
            try:
                for i in range(requests):
                    while not flags[core.FLAGS] & RING_NEED_WAKEUP:  # the loop sleeps: this request wakes it
                        if time.monotonic() > deadline:
                            problems.append(f"request {i}: the loop never went back to sleep")
                            return
                    p.sq[0].produce(batch[i : i + 1])
                    while p.cq[0].ready() == 0:
                        if time.monotonic() > deadline:
                            problems.append(f"request {i}: no answer")
                            return
                    answered.extend(int(r) for r in p.cq[0].consume(1)["request_id"])
            finally:
                done_at.append(time.monotonic_ns())
                done.set()

        waker = threading.Thread(target=client)
        calls = 0
        t0 = time.monotonic_ns()
        waker.start()
        while not done.is_set() and time.monotonic_ns() - t0 < 2 * STALL_S * 1e9:
            assert _loop.step(p.rings, p.batch, p.models, p.cache, p.counters, 0) == 0
            calls += 1
        waker.join(STALL_S)
        elapsed = done_at[0] - t0
        assert not problems, problems
        assert answered == list(range(1, requests + 1))
        assert calls <= elapsed // _loop.HOUSEKEEPING_NS + 1, (
            f"{calls} step calls in {elapsed / 1e6:.0f} ms for {requests} paced requests: wake-ups ended calls"
        )
    finally:
        p.close()
