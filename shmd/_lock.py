"""Exclusive holds that the OS releases when the holder dies.

POSIX record locks (``fcntl(F_SETLK)``) are dropped by the kernel when the
process exits, however it exits, so a crashed client's channel or a killed
daemon's prefix is free again without anyone cleaning up. ``F_GETLK`` also
names the holder's pid, which makes the error actionable.
"""

from __future__ import annotations

import fcntl
import os
import struct

from kernel_abi import LOCK_LENGTH, LOCK_OFFSET

# struct flock on Linux x86-64: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (plus padding).
_FLOCK = "hhqqi4x"


def try_lock(fd: int, *, offset: int = LOCK_OFFSET) -> int:
    """Take an exclusive lock on byte ``offset`` of ``fd``.

    Returns 0 on success, else the pid of the live holder.
    """
    request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, LOCK_LENGTH, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, request)
        return 0
    except OSError:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
        lock_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
        if lock_type == fcntl.F_UNLCK:  # released between our two calls
            return try_lock(fd, offset=offset)
        return pid


def holder(fd: int, *, offset: int = LOCK_OFFSET) -> int:
    """The pid holding byte ``offset`` of ``fd`` locked, or 0."""
    request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, LOCK_LENGTH, 0)
    lock_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, request))
    return 0 if lock_type == fcntl.F_UNLCK else pid


def unlock(fd: int, *, offset: int = LOCK_OFFSET) -> None:
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, offset, LOCK_LENGTH, 0))
