"""ringbuf never trusts shared memory: garbage in a live segment marks the ring corrupt, nothing more."""

from __future__ import annotations

import numpy as np
import pytest

import kernel_abi as abi
from ringbuf import Channel, Consumer, Producer, RingCorrupt
from ringbuf import _core as core

pytestmark = pytest.mark.timeout(60)

CAP = 8


def _records(ids: range) -> np.ndarray:
    rec = np.zeros(len(ids), abi.REQUEST)
    rec["request_id"] = list(ids)
    return rec


def _field(ring_hdr: np.ndarray, name: str) -> int:
    return int(ring_hdr[name])


# (what the hostile writer does to the SQ header, given the consumer's head before it)
SCRIBBLES = {
    "tail_backwards": lambda hdr, head: hdr.__setitem__("tail", head - 2),
    "tail_past_capacity": lambda hdr, head: hdr.__setitem__("tail", head + CAP + 1),
    "tail_wrapped_u64": lambda hdr, head: hdr.__setitem__("tail", (1 << 64) - 1),
    "bad_magic": lambda hdr, head: hdr.__setitem__("magic", 0xDEADBEEF),
    "bad_version": lambda hdr, head: hdr.__setitem__("abi_version", abi.ABI_VERSION + 1),
}


@pytest.mark.parametrize("scribble", list(SCRIBBLES))
def test_garbage_in_a_live_ring_marks_it_corrupt_and_a_healthy_one_keeps_working(
    prefix: str, scribble: str
) -> None:
    bad = Channel.create(prefix, "bad", sq_capacity=CAP)
    good = Channel.create(prefix, "good", sq_capacity=CAP)
    bp, bc = Producer(bad.sq), Consumer(bad.sq)
    gp, gc = Producer(good.sq), Consumer(good.sq)
    # Both rings in use, wrapped around once, with records in flight.
    for ring_p, ring_c in ((bp, bc), (gp, gc)):
        assert ring_p.produce(_records(range(6))) == 6
        assert len(ring_c.consume(6)) == 6
        assert ring_p.produce(_records(range(6, 9))) == 3
    assert _field(bad.sq.header, "corrupt_events") == 0

    SCRIBBLES[scribble](bad.sq.header, bc.head)

    with pytest.raises(RingCorrupt, match=r"^submission ring is corrupt: its producer's tail is invalid \(tail=\d+, "):
        bc.ready()
    assert bc.corrupt
    assert _field(bad.sq.header, "corrupt_events") == 1
    # Every later call answers corrupt without touching a slot or counting again.
    for call, args in ((bc.ready, ()), (bc.consume, (4,)), (bc.wait, (0.01, 10))):
        with pytest.raises(RingCorrupt):
            call(*args)
    assert _field(bad.sq.header, "corrupt_events") == 1
    assert core.ring_peek(bad.sq.hdr64, bad.sq.slots, bc.state, np.zeros((4, 320), np.uint8), 4) == core.CORRUPT

    # The healthy channel is untouched and keeps serving, interleaved with the corrupt one.
    for i in range(3):
        assert list(gc.consume(CAP)["request_id"]) == ([6, 7, 8] if i == 0 else [100 + i])
        assert gp.produce(_records(range(101 + i, 102 + i))) == 1
        with pytest.raises(RingCorrupt):
            bc.ready()
    assert not gc.corrupt and not gp.corrupt
    assert _field(good.sq.header, "corrupt_events") == 0
    del bp, bc, gp, gc
    for ch in (bad, good):
        ch.close()
        ch.unlink()


@pytest.mark.parametrize("head", ["backwards", "past_tail"])
def test_garbage_head_marks_the_producer_side_corrupt(prefix: str, head: str) -> None:
    """The producer validates the consumer's head the same way, and keeps the verdict private."""
    ch = Channel.create(prefix, "c", sq_capacity=CAP)
    prod, cons = Producer(ch.sq), Consumer(ch.sq)
    assert prod.produce(_records(range(5))) == 5
    cons.consume(3)
    assert prod.space() == CAP - 2
    ch.sq.header["head"] = 1 if head == "backwards" else prod.tail + 1
    with pytest.raises(RingCorrupt, match=r"^submission ring is corrupt: its consumer's head is invalid \(head="):
        prod.produce(_records(range(5, 6)))
    assert prod.corrupt
    with pytest.raises(RingCorrupt):
        prod.space()
    # corrupt_events lives in the consumer's block: the producer does not write it.
    assert _field(ch.sq.header, "corrupt_events") == 0
    assert _field(ch.sq.header, "tail") == 5  # nothing was published after the verdict
    del prod, cons
    ch.close()
    ch.unlink()


def test_peeked_copy_is_private(prefix: str) -> None:
    """A producer rewriting a slot after peek cannot change what the consumer copied (and validates)."""
    ch = Channel.create(prefix, "c", sq_capacity=CAP)
    prod, cons = Producer(ch.sq), Consumer(ch.sq)
    rec = _records(range(41, 43))
    rec["model_id"] = abi.ModelId.THREAT
    assert prod.produce(rec) == 2
    out = np.zeros(2, abi.REQUEST)
    assert cons.peek(out) == 2
    before = out.tobytes()
    ch.sq.slots[:2, :] = 0xFF  # the hostile rewrite, after the copy
    assert out.tobytes() == before
    assert list(out["request_id"]) == [41, 42] and set(out["model_id"]) == {abi.ModelId.THREAT}
    cons.release(2)
    del prod, cons
    ch.close()
    ch.unlink()
