"""Ring a ring's wake-up word from plain Python (no numba): for tools, not for hot paths.

A producer wakes a sleeping consumer by adding 1 to the ring's ``wake_seq`` word and
FUTEX_WAKEing it (``_core.ring_commit``, from compiled code). A process that only wants
the consumer awake, with nothing to publish into the ring (``shmd models load``: the
daemon reads a load request at its next housekeeping, which an idle daemon reaches only
once something wakes it), does both with one FUTEX_WAKE_OP: the kernel adds 1 to the word
atomically and wakes one sleeper on it. Importing numba for the atomic add would cost
more (~0.6 s) than the sleep it saves (up to ``sleep_timeout_ms``, 100 ms).
"""

from __future__ import annotations

import ctypes
import os

from kernel_abi import RING_HEADER

from ._segment import RingView

SYS_FUTEX = 202  # x86-64
FUTEX_WAKE_OP = 5
FUTEX_OP_ADD = 1
FUTEX_OP_CMP_EQ = 0
_WAKE_SEQ_OFFSET = RING_HEADER.fields["wake_seq"][1]
# *uaddr2 += 1 (the comparison only decides the second wake, of 0 sleepers here).
_ADD_ONE = (FUTEX_OP_ADD << 28) | (FUTEX_OP_CMP_EQ << 24) | (1 << 12)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def ring_doorbell(ring: RingView) -> None:
    """Bump ``ring``'s wake-up word and wake its consumer if it sleeps on it (or on a set with it).

    Unconditional (no NEED_WAKEUP check): a consumer about to sleep finds the word changed and
    does not; one that is awake sees nothing but a changed word at its next sleep.
    """
    word = ctypes.c_long(ring.hdr32.ctypes.data + _WAKE_SEQ_OFFSET)
    args = (SYS_FUTEX, word.value, FUTEX_WAKE_OP, 1, 0, word.value, _ADD_ONE)  # every argument a long
    if _libc.syscall(*(ctypes.c_long(a) for a in args)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"FUTEX_WAKE_OP on a ring's wake-up word failed: {os.strerror(err)}")
