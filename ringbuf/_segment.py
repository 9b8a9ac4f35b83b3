"""Named shared-memory channels: create, attach, close, unlink, leftovers.

The name rule is kernel_abi's (``_rendezvous.py``): channel C of prefix P is
the segment ``/P.C`` (``/dev/shm/P.C``). Everything a channel needs lives in
that one segment, its wake-up words included: there are no semaphores.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

import numpy as np
import posix_ipc

from kernel_abi import (
    ABI_VERSION,
    CHANNEL_HEADER,
    CHANNEL_MAGIC,
    REQUEST,
    REQUEST_SLOT_SIZE,
    RESPONSE,
    RESPONSE_SLOT_SIZE,
    RING_HEADER,
    RING_HEADER_SIZE,
    RING_MAGIC,
    RingKind,
    channel_layout,
    check_name,
    segment_name,
)

from ._errors import LayoutMismatch, SegmentExists, SegmentNoSpace, SegmentNotFound
from ._ownership import (
    PRIVATE,
    SHM_DIR,
    Access,
    Trust,
    open_own_segment,
    open_peer_segment,
)


def reserve(shm: posix_ipc.SharedMemory, name: str, size: int) -> None:
    """Give the new segment ``shm`` its pages now, or unlink it and raise SegmentNoSpace.

    tmpfs hands out pages on first touch: without this a full /dev/shm shows
    up later as SIGBUS in whichever process writes the page first.
    """
    try:
        os.posix_fallocate(shm.fd, 0, size)
    except OSError as err:
        shm.close_fd()
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass
        free = os.statvfs(SHM_DIR)
        raise SegmentNoSpace(
            f"cannot allocate segment {name} in {SHM_DIR}: {err.strerror}: size={size} bytes, "
            f"{free.f_bavail * free.f_frsize} free; free space there, enlarge it "
            "(mount -o remount,size=...) or configure smaller capacities"
        ) from None


@dataclass
class RingView:
    """numpy views of one ring inside a mapped channel segment."""

    kind: RingKind
    header: np.ndarray  # RING_HEADER record view (shape ())
    hdr64: np.ndarray  # the header as u64 words
    hdr32: np.ndarray  # the header as u32 words
    slots: np.ndarray  # uint8[capacity, slot_size]
    record_dtype: np.dtype

    @property
    def capacity(self) -> int:
        return self.slots.shape[0]

    def records(self, dtype: np.dtype | None = None) -> np.ndarray:
        """The slots as structured records (default: the ring's own dtype)."""
        return self.slots.view(dtype or self.record_dtype).reshape(self.capacity)


def _ring_view(buf: mmap.mmap, offset: int, kind: RingKind, slot_size: int, capacity: int) -> RingView:
    words = RING_HEADER_SIZE // 8
    return RingView(
        kind=kind,
        header=np.frombuffer(buf, RING_HEADER, 1, offset)[0:1].reshape(()),
        hdr64=np.frombuffer(buf, np.uint64, words, offset),
        hdr32=np.frombuffer(buf, np.uint32, words * 2, offset),
        slots=np.frombuffer(buf, np.uint8, capacity * slot_size, offset + RING_HEADER_SIZE).reshape(
            capacity, slot_size
        ),
        record_dtype=REQUEST if kind == RingKind.SUBMISSION else RESPONSE,
    )


def _initialise(buf: mmap.mmap, sq_offset: int, cq_offset: int, size: int, sq_capacity: int, cq_capacity: int) -> None:
    header = np.frombuffer(buf, CHANNEL_HEADER, 1, 0)[0]
    header["abi_version"] = ABI_VERSION
    header["sq_offset"], header["cq_offset"], header["segment_size"] = sq_offset, cq_offset, size
    for kind, offset, slot_size, capacity in (
        (RingKind.SUBMISSION, sq_offset, REQUEST_SLOT_SIZE, sq_capacity),
        (RingKind.COMPLETION, cq_offset, RESPONSE_SLOT_SIZE, cq_capacity),
    ):
        ring = np.frombuffer(buf, RING_HEADER, 1, offset)[0]
        ring["abi_version"], ring["slot_size"], ring["capacity"], ring["kind"] = (
            ABI_VERSION,
            slot_size,
            capacity,
            kind,
        )
        ring["magic"] = RING_MAGIC
    # The channel magic goes last: an attacher that sees it sees a finished layout.
    header["magic"] = CHANNEL_MAGIC


_LAYOUT_WORDS = 3  # u64 words of block 0 holding fields, in the channel and the ring headers
assert max(CHANNEL_HEADER.fields[f][1] for f in ("magic", "abi_version", "sq_offset", "cq_offset", "segment_size")) < 24
assert max(RING_HEADER.fields[f][1] for f in ("magic", "abi_version", "slot_size", "capacity", "kind")) < 24
_HEAD_WORD = RING_HEADER.fields["head"][1] // 8
_TAIL_WORD = RING_HEADER.fields["tail"][1] // 8


def _check_capacity(what: str, capacity: int) -> None:
    if capacity < 2 or capacity & (capacity - 1) or capacity > 1 << 24:
        raise ValueError(f"{what} must be a power of two in [2, 2**24]: {what}={capacity}")


def _expect(segment: str, what: str, found: int, expected: int) -> None:
    if found != expected:
        raise LayoutMismatch(
            f"segment {segment} is not a shmd channel of this version: {what}={found:#x} found, {expected:#x} expected"
        )


@dataclass
class Channel:
    """One mapped channel segment: a submission ring and a completion ring.

    ``created`` is True when this object made the segment; only the creator
    unlinks it (``unlink``), whatever process closes it.
    """

    prefix: str
    name: str
    segment: str
    created: bool
    header: np.ndarray  # CHANNEL_HEADER record view
    sq: RingView
    cq: RingView
    _shm: posix_ipc.SharedMemory = field(repr=False)
    _map: mmap.mmap = field(repr=False)
    _layout: bytes = field(repr=False, default=b"")

    @property
    def fd(self) -> int:
        """The segment's file descriptor (held open for locks)."""
        return self._shm.fd

    @classmethod
    def create(
        cls,
        prefix: str,
        name: str,
        *,
        sq_capacity: int = 1024,
        cq_capacity: int | None = None,
        access: Access = PRIVATE,
        reuse: bool = False,
        replace_untrusted: bool = False,
    ) -> Channel:
        """Create channel ``name`` under ``prefix``, with ``access``'s mode and group.

        With ``reuse=True`` an existing valid segment of that name and of these
        capacities is attached instead (``created`` is then False), which is
        how a restarted daemon picks up what its predecessor left; an invalid
        one, or one of other capacities, is replaced (what was queued in it is
        dropped). Only a segment of this user, no wider than ``access``, is
        reused: another raises ``UntrustedObject``, or with
        ``replace_untrusted`` is unlinked and replaced.
        """
        cq_capacity = cq_capacity or sq_capacity
        _check_capacity("sq_capacity", sq_capacity)
        _check_capacity("cq_capacity", cq_capacity)
        seg = segment_name(prefix, name)
        sq_offset, cq_offset, size = channel_layout(sq_capacity, cq_capacity)
        shm, created = open_own_segment("channel segment", seg, access, replace=replace_untrusted, size=size)
        if not created:
            if not reuse:
                shm.close_fd()
                raise SegmentExists(
                    f"channel segment {seg} already exists: another daemon or a crashed run made it; "
                    f"attach to it, create with reuse=True, or remove it with remove_leftovers({prefix!r})"
                )
            try:
                found = cls._map_existing(prefix, name, seg, shm)
                if (found.sq.capacity, found.cq.capacity) == (sq_capacity, cq_capacity):
                    return found
                found.close()
                raise LayoutMismatch(f"segment {seg} has other capacities")
            except LayoutMismatch:
                posix_ipc.unlink_shared_memory(seg)
                return cls.create(prefix, name, sq_capacity=sq_capacity, cq_capacity=cq_capacity, access=access)
        reserve(shm, seg, size)
        buf = mmap.mmap(shm.fd, size)
        _initialise(buf, sq_offset, cq_offset, size, sq_capacity, cq_capacity)
        return cls._map_segment(prefix, name, seg, shm, buf, created=True)

    @classmethod
    def attach(cls, prefix: str, name: str, *, trust: Trust | None = None) -> Channel:
        """Map an existing channel, refusing one of another layout or owner.

        ``trust`` says whose segment it must be (default ``Trust.daemon()``:
        ``$SHMD_DAEMON_UID``, else root, this user or the ``shmd`` user);
        another owner raises ``UntrustedObject``.
        """
        seg = segment_name(prefix, name)
        try:
            shm = open_peer_segment("channel segment", seg, trust or Trust.daemon())
        except posix_ipc.ExistentialError:
            raise SegmentNotFound(
                f"no channel segment {seg}: is `shmd serve --prefix {prefix}` running with channel {name!r}?"
            ) from None
        return cls._map_existing(prefix, name, seg, shm)

    @classmethod
    def _map_existing(cls, prefix: str, name: str, seg: str, shm: posix_ipc.SharedMemory) -> Channel:
        size = shm.size  # read before close_fd: posix_ipc answers size with fstat on the fd
        if size < CHANNEL_HEADER.itemsize:
            shm.close_fd()
            raise LayoutMismatch(
                f"segment {seg} is too small for a channel: size={size} found, >= {CHANNEL_HEADER.itemsize} expected"
            )
        return cls._map_segment(prefix, name, seg, shm, mmap.mmap(shm.fd, shm.size), created=False)

    @classmethod
    def _map_segment(
        cls, prefix: str, name: str, seg: str, shm: posix_ipc.SharedMemory, buf: mmap.mmap, *, created: bool
    ) -> Channel:
        header = np.frombuffer(buf, CHANNEL_HEADER, 1, 0)[0:1].reshape(())
        try:
            sq, cq = cls._validate(seg, shm.size, header, buf)
        except LayoutMismatch:
            # Views of buf may still live in the traceback: leave the unmap to the GC.
            shm.close_fd()
            raise
        channel = cls(prefix, name, seg, created, header, sq, cq, shm, buf)
        channel._layout = channel._layout_bytes()
        return channel

    def _layout_bytes(self) -> bytes:
        """Block 0 of the channel header and of both ring headers: written once, at creation.

        Plain bytes: the daemon compares them every housekeeping round (~1 µs).
        """
        n = _LAYOUT_WORDS * 8
        return self._map[:n] + self.sq.hdr64[:_LAYOUT_WORDS].tobytes() + self.cq.hdr64[:_LAYOUT_WORDS].tobytes()

    def tampered(self, *, sq_head: int, cq_tail: int) -> str:
        """What in the segment a holder overwrote, for its other side ('' if nothing).

        The layout words (validated at attach) must read as they did then, and
        the SQ head and CQ tail as their owner (the caller) last stored them:
        nobody else writes them, and a holder that does leaves a channel the
        next holder cannot use.
        """
        found = self._layout_bytes()
        if found != self._layout:
            now, was = np.frombuffer(found, np.uint64), np.frombuffer(self._layout, np.uint64)
            i = int(np.flatnonzero(now != was)[0])
            where = ("channel header", "submission ring header", "completion ring header")[i // _LAYOUT_WORDS]
            return (
                f"{where} layout word {i % _LAYOUT_WORDS} overwritten: "
                f"value={int(now[i]):#x} found, {int(was[i]):#x} expected"
            )
        owned = ((self.sq, _HEAD_WORD, "head", sq_head), (self.cq, _TAIL_WORD, "tail", cq_tail))
        for ring, word, name, expected in owned:
            found = int(ring.hdr64[word])
            if found != expected:
                return f"{ring.kind.name.lower()} ring {name} overwritten: {name}={found} found, {expected} expected"
        return ""

    @staticmethod
    def _validate(seg: str, size: int, header: np.ndarray, buf: mmap.mmap) -> tuple[RingView, RingView]:
        _expect(seg, "magic", int(header["magic"]), CHANNEL_MAGIC)
        _expect(seg, "abi_version", int(header["abi_version"]), ABI_VERSION)
        _expect(seg, "segment_size", int(header["segment_size"]), size)
        views = []
        for kind, key, slot_size in (
            (RingKind.SUBMISSION, "sq_offset", REQUEST_SLOT_SIZE),
            (RingKind.COMPLETION, "cq_offset", RESPONSE_SLOT_SIZE),
        ):
            offset = int(header[key])
            if offset + RING_HEADER_SIZE > size:
                _expect(seg, key, offset, size - RING_HEADER_SIZE)
            rh = np.frombuffer(buf, RING_HEADER, 1, offset)[0]
            ring = kind.name.lower()
            _expect(seg, f"{ring} magic", int(rh["magic"]), RING_MAGIC)
            _expect(seg, f"{ring} abi_version", int(rh["abi_version"]), ABI_VERSION)
            _expect(seg, f"{ring} kind", int(rh["kind"]), kind)
            _expect(seg, f"{ring} slot_size", int(rh["slot_size"]), slot_size)
            capacity = int(rh["capacity"])
            end = offset + RING_HEADER_SIZE + capacity * slot_size
            if capacity < 2 or capacity & (capacity - 1) or end > size:
                raise LayoutMismatch(
                    f"segment {seg} has an impossible {ring} capacity: capacity={capacity} found, "
                    f"a power of two that fits in size={size} expected"
                )
            views.append(_ring_view(buf, offset, kind, slot_size, capacity))
        return views[0], views[1]

    def close(self) -> None:
        """Unmap and close; the segment itself stays (see ``unlink``).

        Views handed out earlier (``records()``) should be dropped first; any
        that are still alive (a Producer, a traceback's frame) keep the mapping
        valid, and it is unmapped when the last of them dies.
        """
        if self.sq is None:
            return
        self.header = self.sq = self.cq = None  # type: ignore[assignment]
        try:
            self._map.close()
        except BufferError:
            # mmap refuses to unmap under live numpy views; raising here would turn
            # a forgotten reference (often one held by an exception's traceback) into
            # a crash at shutdown. The GC unmaps it with the last view instead.
            pass
        self._shm.close_fd()

    def unlink(self) -> None:
        """Remove the segment's name (mappings stay valid until closed)."""
        try:
            posix_ipc.unlink_shared_memory(self.segment)
        except posix_ipc.ExistentialError:
            pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def leftovers(prefix: str) -> list[str]:
    """Names of the segments under ``prefix`` in /dev/shm."""
    check_name("prefix", prefix)
    return ["/" + path.name for path in sorted(SHM_DIR.glob(f"{prefix}.*"))]


def remove_leftovers(prefix: str) -> list[str]:
    """Unlink every segment under ``prefix``; returns their names."""
    removed = []
    for name in leftovers(prefix):
        try:
            posix_ipc.unlink_shared_memory(name)
            removed.append(name)
        except posix_ipc.ExistentialError:
            pass
    return removed
