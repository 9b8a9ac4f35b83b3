"""bench daemon's batch clients wait for answers as a caller should: asleep on the CQ (issue 11).

They polled the CQ without a pause: four of them on two CPUs took the CPU the daemon
needed to answer them, and "four clients" measured the clients' spinning, not the daemon.
"""

from __future__ import annotations

import numpy as np

import ringbuf
from bench.daemon import FIXED, _stream, _template
from kernel_abi import RING_NEED_WAKEUP
from ringbuf import _core as core


def test_stream_client_sleeps_on_its_cq_once_the_sq_is_full(prefix: str) -> None:
    ch = ringbuf.Channel.create(prefix, "c0", sq_capacity=64)
    try:
        sq_state = core.new_state(int(ch.sq.hdr64[core.TAIL]), int(ch.sq.hdr64[core.HEAD]))
        tail = int(ch.cq.hdr64[core.TAIL])
        cq_state = core.new_state(tail, tail)
        rows = np.repeat(_template(no_cache=True)[None, :], 16, axis=0)
        resp = np.zeros((ch.cq.capacity, ch.cq.slots.shape[1]), np.uint8)
        counts = np.zeros(3, np.int64)  # answers, hits, last id
        # Nobody answers: the client fills the SQ (4 batches of 16), then can only wait.
        woke = _stream(ch.sq.hdr64, ch.sq.hdr32, ch.sq.slots, sq_state, ch.cq.hdr64, ch.cq.hdr32, ch.cq.slots,
                       cq_state, rows, 20_000_000, resp, FIXED, 1000, 10_000_000, counts)  # fmt: skip
        assert not woke
        assert counts.tolist() == [0, 0, 64]
        assert cq_state[core.SLEEPS] >= 1, "the client polled its CQ instead of sleeping on it"
        assert ch.cq.hdr32[core.FLAGS] & RING_NEED_WAKEUP == 0, "left NEED_WAKEUP set after its sleep"
    finally:
        ch.close()
        ch.unlink()
