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


class SegmentNoSpace(RingError):
    """Raised on create when /dev/shm cannot hold the segment.

    Nothing is left behind. Free space in /dev/shm, enlarge it
    (``mount -o remount,size=...``), or ask for smaller capacities.
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


class UntrustedObject(RingError):
    """Raised when an existing segment is not from whom it should be.

    The daemon raises it for an object it did not create itself (another
    owner, a wider mode or another group than configured): someone may be
    squatting the name to read or forge requests. A caller raises it for a
    segment whose owner is not the daemon's expected uid. The message names
    the object, its owner, group and mode, and what was expected.
    """


class AccessDenied(RingError, PermissionError):
    """Raised when this process's user may not open a segment.

    The message names the owner, group and mode, and which user or group
    membership would work.
    """
