"""Memory-ordering primitives for numba code, as LLVM atomics.

numba compiles a plain load of a shared index like any other load: inside a
spin loop LLVM hoists it and the loop never sees the other process's store (we
measured an infinite loop). These intrinsics emit ``load atomic ... acquire``,
``store atomic ... release`` and ``fence seq_cst`` instead, which LLVM may
neither hoist nor reorder across. On x86-64 the acquire load and release store
are plain ``mov``s; only the full fence costs (an ``mfence``/locked op).

They also work when called from Python through any ``@njit`` wrapper, which is
how the Python-side ring API uses them: one implementation for both.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _item_pointer(context, builder, aryty, ary, idx):
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [idx], wraparound=False)


@intrinsic
def load_acquire(typingctx, ary, idx):
    """``ary[idx]`` as an atomic acquire load (integer arrays only)."""
    if not (isinstance(ary, types.Array) and isinstance(ary.dtype, types.Integer)):
        return None
    if not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", ary.dtype.bitwidth // 8)

    return ary.dtype(ary, idx), codegen


@intrinsic
def store_release(typingctx, ary, idx, value):
    """``ary[idx] = value`` as an atomic release store (integer arrays only)."""
    if not (isinstance(ary, types.Array) and isinstance(ary.dtype, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty, _, valty = signature.args
        ptr = _item_pointer(context, builder, aryty, args[0], args[1])
        stored = context.cast(builder, args[2], valty, aryty.dtype)
        builder.store_atomic(stored, ptr, "release", aryty.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(ary, idx, value), codegen


@intrinsic
def full_fence(typingctx):
    """A sequentially consistent fence: no load or store moves across it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cpu_relax(typingctx):
    """The x86 ``pause`` hint for spin loops: frees the sibling hyperthread."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):
    """libc ``sched_yield()``: let another runnable task of this CPU run first."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True, inline="always")
def yield_cpu():
    """Hand the CPU to a peer the scheduler placed on ours (``sched_yield``).

    On these VMs a task woken by a futex is put on its waker's CPU (perf sched,
    paced round trips: 966 of 1,000 wake-ups of the daemon landed there) and
    waits there until the waker blocks, yields or is preempted. The daemon,
    having answered the client whose wake-up put it on that client's CPU,
    yields once so the client runs now rather than after the daemon's sleep
    set-up or housekeeping. Costs one system call (~0.8 µs here) when nobody
    else is runnable.
    """
    _sched_yield()


#: How long a spin only pauses before it yields the CPU between looks (ns).
SPIN_YIELD_AFTER_NS = 2_000


@njit(nogil=True, cache=True, inline="always")
def spin_pause(spun_ns):
    """One wait of a spin loop that has spun ``spun_ns`` so far.

    The first SPIN_YIELD_AFTER_NS only ``pause`` (a peer answering back to back
    is caught within a microsecond); after that each look yields the CPU. On two
    CPUs the peer we spin for is often woken onto ours (the scheduler places a
    woken task near its waker) and a spinner that is not preempted keeps it
    off for its whole window; ``sched_yield`` runs it at once, and costs a
    system call (~1 µs here) when nobody else is runnable.
    """
    if spun_ns < SPIN_YIELD_AFTER_NS:
        cpu_relax()
    else:
        _sched_yield()


@intrinsic
def monotonic_ns(typingctx):
    """``clock_gettime(CLOCK_MONOTONIC)`` in ns: the clock of every ABI timestamp.

    Called straight from compiled code (the vDSO makes it ~20 ns), so the poll
    loop and spin windows need no trip back to Python to read the time.
    """

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), timespec.as_pointer()])
        clock_gettime = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, timespec)
        builder.call(clock_gettime, [ir.Constant(ir.IntType(32), 1), ts])  # 1 = CLOCK_MONOTONIC
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen
