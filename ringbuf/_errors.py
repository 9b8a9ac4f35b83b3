"""The exceptions of the ring layer."""

from __future__ import annotations


class RingError(Exception):
    """Base of every error raised by ringbuf."""


class SegmentNotFound(RingError):
    """Raised on attach when no segment has that name.

    Usually the daemon is not running, or runs with another ``--prefix``.
    """


class SegmentExists(RingError):
    """Raised on create when a segment of that name already exists.

    Another process (or a crashed run) owns it: attach to it, pass
    ``reuse=True`` to take it over, or remove it with ``remove_leftovers``.
    """


class LayoutMismatch(RingError):
    """Raised on attach when the segment's magic, ABI version or sizes differ.

    The segment was made by another version of shmd (or is not a channel at
    all); the message says what was found and what was expected.
    """


class RingCorrupt(RingError):
    """Raised by Python-side ring calls once the peer's index was invalid.

    The ring is no longer read or written; recreate the channel.
    """
