"""Futex wait and wake on 32-bit words in shared memory, for numba code.

The wake-up path of every ring: a consumer sleeps with ``FUTEX_WAIT`` on its
ring's ``wake_seq`` word, a producer wakes it with ``FUTEX_WAKE``; the daemon
sleeps on all its submission rings at once with ``futex_waitv`` (Linux 5.16+).
The calls are made from compiled code through libc's ``syscall``, declared as
an external function inside the intrinsics (as ``clock_gettime`` is in
``_atomics``), so callers stay cacheable (``cache=True``) and no Python runs
between a wake-up and the work it announces. The operations are shared, not
``FUTEX_PRIVATE_FLAG``: the word is mapped by two processes.

Each returns the syscall's result, or ``-errno`` when it fails (``EAGAIN``:
the word had already changed; ``ETIMEDOUT``; ``EINTR``: a signal arrived, the
caller returns to Python so its handler runs).
"""

from __future__ import annotations

import errno

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._atomics import _item_pointer

SYS_FUTEX = 202  # x86-64
SYS_FUTEX_WAITV = 449  # x86-64, Linux 5.16
FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_32 = 2  # futex_waitv entry flag: a 32-bit word (shared: no FUTEX_PRIVATE_FLAG)
CLOCK_MONOTONIC = 1
#: Words of one ``struct futex_waitv`` {u64 val; u64 uaddr; u32 flags; u32 reserved}.
WAITV_WORDS = 3
WAITV_VAL, WAITV_ADDR, WAITV_FLAGS = 0, 1, 2
#: futex_waitv takes at most this many words.
WAITV_MAX = 128

EAGAIN = -errno.EAGAIN
ETIMEDOUT = -errno.ETIMEDOUT
EINTR = -errno.EINTR
ENOSYS = -errno.ENOSYS

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_TIMESPEC = ir.LiteralStructType([_I64, _I64])


def _syscall(builder, args):
    """``syscall(args...)`` as i64; ``-errno`` when it returns -1."""
    fnty = ir.FunctionType(_I64, [_I64], var_arg=True)
    fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
    ret = builder.call(fn, [ir.Constant(_I64, a) if isinstance(a, int) else a for a in args])
    result = cgutils.alloca_once_value(builder, ret)
    with builder.if_then(builder.icmp_signed("==", ret, ir.Constant(_I64, -1)), likely=False):
        errno_fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32.as_pointer(), []), "__errno_location"
        )
        builder.store(builder.neg(builder.sext(builder.load(builder.call(errno_fn, [])), _I64)), result)
    return builder.load(result)


def _timespec(builder, ns):
    """A stack ``struct timespec`` holding ``ns`` (i64 nanoseconds)."""
    ts = cgutils.alloca_once(builder, _TIMESPEC)
    billion = ir.Constant(_I64, 1_000_000_000)
    builder.store(builder.sdiv(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
    builder.store(builder.srem(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
    return ts


def _u32_word(typingctx, ary, idx):
    return isinstance(ary, types.Array) and ary.dtype == types.uint32 and isinstance(idx, types.Integer)


@intrinsic
def futex_wait(typingctx, ary, idx, expected, timeout_ns):
    """Sleep while ``ary[idx] == expected``, at most ``timeout_ns`` (< 0: no limit)."""
    if not _u32_word(typingctx, ary, idx):
        return None

    def codegen(context, builder, signature, args):
        aryty, _, expty, toty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1])
        value = builder.zext(context.cast(builder, args[2], expty, types.uint32), _I64)
        timeout = context.cast(builder, args[3], toty, types.int64)
        ts = _timespec(builder, timeout)
        no_limit = builder.icmp_signed("<", timeout, ir.Constant(_I64, 0))
        ts_arg = builder.select(no_limit, ir.Constant(_I64, 0), builder.ptrtoint(ts, _I64))
        return _syscall(builder, [SYS_FUTEX, builder.ptrtoint(ptr, _I64), FUTEX_WAIT, value, ts_arg, 0, 0])

    return types.int64(ary, idx, expected, timeout_ns), codegen


@intrinsic
def futex_wake(typingctx, ary, idx, count):
    """Wake up to ``count`` sleepers on ``ary[idx]``; how many were woken."""
    if not _u32_word(typingctx, ary, idx):
        return None

    def codegen(context, builder, signature, args):
        aryty, _, countty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1])
        n = context.cast(builder, args[2], countty, types.int64)
        return _syscall(builder, [SYS_FUTEX, builder.ptrtoint(ptr, _I64), FUTEX_WAKE, n, 0, 0, 0])

    return types.int64(ary, idx, count), codegen


@intrinsic
def futex_waitv(typingctx, waiters, n, deadline_ns):
    """Sleep until one of ``n`` words changes or CLOCK_MONOTONIC passes ``deadline_ns``.

    ``waiters`` is a ``uint64[n, WAITV_WORDS]`` array of ``struct futex_waitv``
    (value, address, flags). Returns the index of a woken word or ``-errno``.
    """
    if not (isinstance(waiters, types.Array) and waiters.dtype == types.uint64 and waiters.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        aryty, nty, dlty = signature.args
        array = context.make_array(aryty)(context, builder, args[0])
        count = context.cast(builder, args[1], nty, types.int64)
        ts = _timespec(builder, context.cast(builder, args[2], dlty, types.int64))
        return _syscall(
            builder,
            [
                SYS_FUTEX_WAITV,
                builder.ptrtoint(array.data, _I64),
                count,
                0,
                builder.ptrtoint(ts, _I64),
                CLOCK_MONOTONIC,
            ],
        )

    return types.int64(waiters, n, deadline_ns), codegen


@intrinsic
def atomic_add_u32(typingctx, ary, idx, value):
    """``ary[idx] += value`` as one atomic read-modify-write (seq_cst); the old value."""
    if not _u32_word(typingctx, ary, idx):
        return None

    def codegen(context, builder, signature, args):
        aryty, _, valty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1])
        val = context.cast(builder, args[2], valty, types.uint32)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return types.uint32(ary, idx, value), codegen
