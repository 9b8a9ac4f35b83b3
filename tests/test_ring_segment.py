"""ringbuf segments: create/attach/refuse, permissions, reuse, leftovers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import posix_ipc
import pytest

import kernel_abi as abi
from ringbuf import (
    Access,
    Channel,
    Consumer,
    LayoutMismatch,
    Producer,
    SegmentExists,
    SegmentNotFound,
    leftovers,
    remove_leftovers,
)

pytestmark = pytest.mark.timeout(60)

SHM = Path("/dev/shm")


def _poke(prefix: str, name: str, offset: int, dtype: str, value: int) -> None:
    """Write one word of a live segment from another process, as a hostile or stale writer would."""
    code = (
        "import mmap, sys, numpy as np, posix_ipc;"
        "shm = posix_ipc.SharedMemory(sys.argv[1]); m = mmap.mmap(shm.fd, shm.size);"
        "np.frombuffer(m, sys.argv[3], 1, int(sys.argv[2]))[0] = int(sys.argv[4])"
    )
    subprocess.run([sys.executable, "-c", code, f"/{prefix}.{name}", str(offset), dtype, str(value)], check=True)


def _ring_field(ch: Channel, ring: str, field: str) -> int:
    return int(ch.header[f"{ring}_offset"]) + abi.RING_HEADER.fields[field][1]


@pytest.mark.parametrize(
    ("where", "field", "dtype", "value", "message"),
    [
        ("channel", "magic", "<u8", 0x1234, rf"magic=0x1234 found, {abi.CHANNEL_MAGIC:#x} expected"),
        ("channel", "abi_version", "<u4", 99, rf"abi_version=0x63 found, {abi.ABI_VERSION:#x} expected"),
        ("sq", "magic", "<u8", 0, rf"submission magic=0x0 found, {abi.RING_MAGIC:#x} expected"),
        ("cq", "abi_version", "<u4", 7, rf"completion abi_version=0x7 found, {abi.ABI_VERSION:#x} expected"),
        ("sq", "kind", "<u4", abi.RingKind.COMPLETION, r"submission kind=0x2 found, 0x1 expected"),
        ("cq", "slot_size", "<u4", 128, r"completion slot_size=0x80 found, 0x40 expected"),
    ],
)
def test_attach_refuses_a_foreign_layout(
    prefix: str, where: str, field: str, dtype: str, value: int, message: str
) -> None:
    """Attach names the segment, the field, what it found and what it expected."""
    with Channel.create(prefix, "c", sq_capacity=4) as ch:
        if where == "channel":
            offset = abi.CHANNEL_HEADER.fields[field][1]
        else:
            offset = _ring_field(ch, where, field)
        _poke(prefix, "c", offset, dtype, value)
        seg = f"/{prefix}.c"
        with pytest.raises(LayoutMismatch, match=rf"^segment {seg} is not a shmd channel of this version: {message}$"):
            Channel.attach(prefix, "c")
        ch.unlink()


def test_attach_refuses_a_truncated_segment(prefix: str) -> None:
    shm = posix_ipc.SharedMemory(f"/{prefix}.c", posix_ipc.O_CREX, size=64)
    shm.close_fd()
    too_small = r"^segment /\S+ is too small for a channel: size=64 found, >= 256 expected$"
    with pytest.raises(LayoutMismatch, match=too_small):
        Channel.attach(prefix, "c")
    posix_ipc.unlink_shared_memory(f"/{prefix}.c")


def test_attach_missing_segment(prefix: str) -> None:
    missing = rf"^no channel segment /{prefix}\.nope: is `shmd serve --prefix {prefix}`"
    with pytest.raises(SegmentNotFound, match=missing):
        Channel.attach(prefix, "nope")


def test_default_permissions_are_0600_and_configurable(prefix: str) -> None:
    old = os.umask(0)  # a permissive umask must not widen the default
    try:
        a = Channel.create(prefix, "a", sq_capacity=2)
        b = Channel.create(prefix, "b", sq_capacity=2, access=Access(0o640))
    finally:
        os.umask(old)
    assert stat.S_IMODE((SHM / f"{prefix}.a").stat().st_mode) == 0o600
    assert stat.S_IMODE((SHM / f"{prefix}.b").stat().st_mode) == 0o640
    for ch in (a, b):
        ch.close()
        ch.unlink()


def test_create_refuses_an_existing_segment_and_reuse_reattaches(prefix: str) -> None:
    first = Channel.create(prefix, "c", sq_capacity=8, cq_capacity=4)
    prod = Producer(first.sq)
    rec = np.zeros(3, abi.REQUEST)
    rec["request_id"] = [7, 8, 9]
    assert prod.produce(rec) == 3
    del prod
    again = Channel.create(prefix, "c", sq_capacity=8, cq_capacity=4, reuse=True)
    assert not again.created and first.created
    # It is the same segment: what was submitted before is still there to answer.
    cons = Consumer(again.sq)
    assert list(cons.consume(8)["request_id"]) == [7, 8, 9]
    assert again.cq.capacity == 4
    del cons
    again.close()
    with pytest.raises(SegmentExists, match=rf"^channel segment /{prefix}\.c already exists: .*reuse=True"):
        Channel.create(prefix, "c", sq_capacity=8)
    first.close()
    first.unlink()


def test_reuse_replaces_a_segment_of_other_capacities(prefix: str) -> None:
    """A daemon restarted with other capacities must not serve rings of the old ones."""
    first = Channel.create(prefix, "c", sq_capacity=8, cq_capacity=4)
    again = Channel.create(prefix, "c", sq_capacity=8, cq_capacity=8, reuse=True)
    assert again.created and (again.sq.capacity, again.cq.capacity) == (8, 8)
    for ch in (first, again):
        ch.close()
    again.unlink()


def test_reuse_replaces_an_invalid_segment(prefix: str) -> None:
    shm = posix_ipc.SharedMemory(f"/{prefix}.c", posix_ipc.O_CREX, size=4096)
    shm.close_fd()  # all zeros: no magic
    ch = Channel.create(prefix, "c", sq_capacity=4, reuse=True)
    assert ch.created
    assert int(ch.header["magic"]) == abi.CHANNEL_MAGIC
    ch.close()
    ch.unlink()


@pytest.mark.parametrize("capacity", [0, 1, 3, 12, 1 << 25])
def test_capacity_must_be_a_power_of_two(prefix: str, capacity: int) -> None:
    wrong = rf"^sq_capacity must be a power of two in \[2, 2\*\*24\]: sq_capacity={capacity}$"
    with pytest.raises(ValueError, match=wrong):
        Channel.create(prefix, "c", sq_capacity=capacity)


def test_leftovers_finds_and_removes_segments(prefix: str) -> None:
    ch = Channel.create(prefix, "c", sq_capacity=2)
    other = Channel.create(prefix, "d", sq_capacity=2)
    ch.close()  # closed, not unlinked: what a crashed run leaves
    other.close()
    assert leftovers(prefix) == [f"/{prefix}.c", f"/{prefix}.d"]
    # Another prefix that merely starts the same is not touched.
    assert leftovers(prefix + "z") == []
    assert sorted(remove_leftovers(prefix)) == [f"/{prefix}.c", f"/{prefix}.d"]
    assert leftovers(prefix) == []


def test_empty_batches(prefix: str) -> None:
    """Producing nothing and consuming nothing are answers, not errors."""
    with Channel.create(prefix, "c", sq_capacity=4) as ch:
        prod, cons = Producer(ch.sq), Consumer(ch.sq)
        assert prod.produce(np.zeros(0, abi.REQUEST)) == 0
        assert len(cons.consume(0)) == 0
        assert len(cons.consume(4)) == 0
        assert prod.reserve(0) == []
        with pytest.raises(ValueError, match=r"^record size must equal the slot size: record=64 slot=320$"):
            prod.produce(np.zeros(1, abi.RESPONSE))
        del prod, cons
        ch.unlink()


def test_model_request_views_alias_the_slot(prefix: str) -> None:
    """A record written through REQUESTS[model] reads back through REQUEST unchanged, across a ring."""
    with Channel.create(prefix, "c", sq_capacity=4) as ch:
        prod, cons = Producer(ch.sq), Consumer(ch.sq)
        rec = np.zeros(1, abi.REQUESTS[abi.ModelId.WORKLOAD])
        rec["request_id"] = 42
        rec["model_id"] = abi.ModelId.WORKLOAD
        rec["payload"]["historical_cpu"] = np.linspace(0, 1, 10)
        rec["payload"]["agent_hash"] = abi.hash_str("agent-1")
        assert prod.produce(rec) == 1
        got = cons.consume(1)
        assert got.dtype == abi.REQUEST
        back = got.view(abi.REQUESTS[abi.ModelId.WORKLOAD])
        assert back.tobytes() == rec.tobytes()
        assert int(back["payload"]["agent_hash"][0]) == abi.hash_str("agent-1")
        del prod, cons, got, back
        ch.unlink()
