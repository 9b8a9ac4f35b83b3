"""The dense-layer micro-kernel: ``R`` rows x ``C`` vectors of 8 float32 outputs, in LLVM IR.

Numba's loop vectoriser keeps a layer's accumulators in memory (one store per FMA), which
halves the FMA rate, and it does not vectorise across explicit per-lane accumulators.
This kernel holds its ``R * C`` accumulators in vector registers for the whole reduction
over the input: per input column it loads ``C`` weight vectors, broadcasts ``R`` inputs
and issues ``R * C`` fused multiply-adds (on AVX2 + FMA: 8 FMAs per 2 loads + 4
broadcasts at R=4, C=2, i.e. FMA-bound).

Layout it expects (``models._program`` builds it): weights ``[in, out_pad]`` row-major
with ``out_pad`` a multiple of 8 (zero columns beyond the layer's width), bias padded the
same way. Accumulation is float32 with FMA, in input-column order, per output; LiteRT
(XNNPACK) also accumulates in float32, in a different order, so results agree to
rounding (tested at <= 1e-5 on every output).
"""

from __future__ import annotations

import math
from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 8
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_I64 = ir.IntType(64)


def _declare_fma(module: ir.Module) -> ir.Function:
    name = f"llvm.fma.v{LANES}f32"
    found = module.globals.get(name)
    return found if found is not None else ir.Function(module, ir.FunctionType(_VEC, [_VEC] * 3), name)


def _tile_kernel(rows: int, vectors: int):
    """An intrinsic ``(x, x_stride, w, w_stride, bias, out, out_stride, n_in, relu) -> None``.

    ``x``, ``w``, ``bias``, ``out`` are byte addresses (int64) of float32 data; strides are
    in elements. Computes ``out[r, v*8:(v+1)*8] = act(bias + sum_k x[r, k] * w[k, ...])`` for
    ``rows`` rows and ``vectors`` blocks of 8 columns; ``relu`` != 0 clamps at zero.
    """

    @intrinsic
    def kernel(typingctx, x, x_stride, w, w_stride, bias, out, out_stride, n_in, relu):
        sig = types.void(types.int64, types.int64, types.int64, types.int64, types.int64,
                         types.int64, types.int64, types.int64, types.int64)  # fmt: skip

        def codegen(context, builder, signature, args):
            x, xs, w, ws, b, o, os_, n, relu = (context.cast(builder, a, t, types.int64)
                                                for a, t in zip(args, signature.args, strict=True))  # fmt: skip
            fptr = _F32.as_pointer()
            vptr = _VEC.as_pointer()
            fma = _declare_fma(builder.module)
            xbase = builder.inttoptr(x, fptr)
            wbase = builder.inttoptr(w, fptr)
            bbase = builder.inttoptr(b, fptr)
            obase = builder.inttoptr(o, fptr)

            def vload(base, index):
                p = builder.bitcast(builder.gep(base, [index]), vptr)
                return builder.load(p, align=4)

            init = [vload(bbase, ir.Constant(_I64, LANES * v)) for v in range(vectors)]
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            zero = ir.Constant(_I64, 0)
            builder.cbranch(builder.icmp_signed(">", n, zero), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(_I64)
            k.add_incoming(zero, entry)
            accs = []
            for _ in range(rows * vectors):
                phi = builder.phi(_VEC)
                accs.append(phi)
            for i, phi in enumerate(accs):
                phi.add_incoming(init[i % vectors], entry)
            wrow = builder.mul(k, ws)
            wv = [vload(wbase, builder.add(wrow, ir.Constant(_I64, LANES * v))) for v in range(vectors)]
            new = []
            undef = ir.Constant(_VEC, ir.Undefined)
            mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
            for r in range(rows):
                xv = builder.load(builder.gep(xbase, [builder.add(builder.mul(ir.Constant(_I64, r), xs), k)]))
                bx = builder.shuffle_vector(builder.insert_element(undef, xv, ir.Constant(ir.IntType(32), 0)),
                                            undef, mask)  # fmt: skip
                for v in range(vectors):
                    new.append(builder.call(fma, [bx, wv[v], accs[r * vectors + v]]))
            k1 = builder.add(k, ir.Constant(_I64, 1))
            k.add_incoming(k1, loop)
            for phi, val in zip(accs, new, strict=True):
                phi.add_incoming(val, loop)
            builder.cbranch(builder.icmp_signed("<", k1, n), loop, done)

            builder.position_at_end(done)
            zero_v = ir.Constant(_VEC, [0.0] * LANES)
            results = []
            for i in range(rows * vectors):  # phis first: LLVM wants them at the block's top
                res = builder.phi(_VEC)
                res.add_incoming(init[i % vectors], entry)
                res.add_incoming(new[i], loop)
                results.append(res)
            clamp = builder.icmp_signed("!=", relu, zero)
            for i, res in enumerate(results):
                r, v = divmod(i, vectors)
                # relu as XNNPACK clamps (x < 0 -> 0): a NaN stays NaN
                relued = builder.select(builder.fcmp_ordered("<", res, zero_v), zero_v, res)
                val = builder.select(clamp, relued, res)
                index = builder.add(builder.mul(ir.Constant(_I64, r), os_), ir.Constant(_I64, LANES * v))
                builder.store(val, builder.bitcast(builder.gep(obase, [index]), vptr), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


# Four rows: 8 or 4 accumulators. One row (the tail of a batch, and batch 1): up to 8
# column blocks at once, so 8 independent FMA chains hide the FMA latency.
tile_4x2 = _tile_kernel(4, 2)
tile_4x1 = _tile_kernel(4, 1)
# Eight rows of one block: a narrow layer (a head of 1-8 outputs) with 8 FMA chains, not 4.
tile_8x1 = _tile_kernel(8, 1)
tile_1x8 = _tile_kernel(1, 8)
tile_1x4 = _tile_kernel(1, 4)
tile_1x2 = _tile_kernel(1, 2)
tile_1x1 = _tile_kernel(1, 1)


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of ``bits`` (builds 2**n for ``exp``)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(context.cast(builder, args[0], signature.args[0], types.int64), ir.IntType(32))
        return builder.bitcast(low, _F32)

    return types.float32(bits), codegen


def _splat(builder: ir.IRBuilder, value: ir.Value, count: int) -> ir.Value:
    """``value`` in every lane of a ``count``-lane vector."""
    vec = ir.VectorType(value.type, count)
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), count), [0] * count)
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), zeros)


def _within(builder: ir.IRBuilder, x: ir.Value, lo: ir.Value, hi: ir.Value) -> ir.Value:
    """Lanes of ``x`` that are finite and in ``[lo, hi]`` (scalars of x's element type). With both
    bounds finite, ``lo <= x <= hi`` already excludes NaN and infinities (ordered compares): the
    finiteness test is then dropped (the bounds are constants after inlining: LLVM folds it)."""
    count = x.type.count
    lo_v, hi_v = _splat(builder, lo, count), _splat(builder, hi, count)
    ok = builder.and_(builder.fcmp_ordered(">=", x, lo_v), builder.fcmp_ordered("<=", x, hi_v))
    finite = builder.fcmp_ordered("==", builder.fsub(x, x), ir.Constant(x.type, [0.0] * count))
    inf = ir.Constant(lo.type, math.inf)
    bounded = builder.and_(builder.fcmp_ordered(">", lo, builder.fneg(inf)), builder.fcmp_ordered("<", hi, inf))
    return builder.and_(ok, builder.or_(finite, _splat(builder, bounded, count)))


@intrinsic
def all_within(typingctx, values, lo, hi):
    """True when every value of a record's array field is finite and in ``[lo, hi]``, as one vector test.

    ``values`` is a fixed-size field of a payload record (numba's ``NestedArray``: its
    length is part of the type); each value is widened to float64 as ``np.float64(v)``
    would (exactly), so the answer is that of a per-value ``lo <= v <= hi`` and finite.
    LLVM does not vectorise the per-value loop (it unrolls 6 scalar instructions a value);
    this loads the field as one vector, compares and reduces.
    """
    if not isinstance(values, types.NestedArray) or values.ndim != 1 or not isinstance(values.dtype, types.Number):
        return None
    count, dtype = values.shape[0], values.dtype

    def codegen(context, builder, signature, args):
        elt = context.get_data_type(dtype)
        f64 = ir.DoubleType()
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        v = builder.load(builder.bitcast(data, ir.VectorType(elt, count).as_pointer()), align=1)
        wide = ir.VectorType(f64, count)
        if isinstance(dtype, types.Float):
            x = builder.fpext(v, wide) if dtype.bitwidth < 64 else v
        elif dtype.signed:
            x = builder.sitofp(v, wide)
        else:
            x = builder.uitofp(v, wide)
        lo, hi = (context.cast(builder, a, t, types.float64) for a, t in zip(args[1:], signature.args[1:], strict=True))
        ok = _within(builder, x, lo, hi)
        if isinstance(dtype, types.Float) and dtype.bitwidth < 64:
            # The same test in the field's own type where lo and hi are exact in it (8 float32
            # lanes a register, no widening): the bounds are constants after inlining, so LLVM
            # keeps one of the two tests.
            lo32, hi32 = builder.fptrunc(lo, elt), builder.fptrunc(hi, elt)
            exact = builder.and_(builder.fcmp_ordered("==", builder.fpext(lo32, f64), lo),
                                 builder.fcmp_ordered("==", builder.fpext(hi32, f64), hi))  # fmt: skip
            ok = builder.select(exact, _within(builder, v, lo32, hi32), ok)
        bits = builder.bitcast(ok, ir.IntType(count))
        return builder.icmp_unsigned("==", bits, ir.Constant(ir.IntType(count), (1 << count) - 1))

    return types.boolean(values, lo, hi), codegen


def _widened_chunks(context, builder, aryty, ary, start: int, stop: int, pad: ir.Value) -> list[ir.Value]:
    """``values[start:stop]`` of a record's array field as 4-lane float64 vectors (exact widening),
    the last padded with ``pad``: one load and one widening per chunk, the AVX2 registers the
    values go to (not the whole field as one vector shuffled into chunks)."""
    elt = context.get_data_type(aryty.dtype)
    f64 = ir.DoubleType()
    base = context.make_array(aryty)(context, builder, value=ary).data
    chunks = []
    for first in range(start, stop, 4):
        count = min(4, stop - first)
        data = builder.gep(base, [ir.Constant(ir.IntType(64), first)])
        v = builder.load(builder.bitcast(data, ir.VectorType(elt, count).as_pointer()), align=1)
        wide = ir.VectorType(f64, count)
        if isinstance(aryty.dtype, types.Float):
            x = builder.fpext(v, wide) if aryty.dtype.bitwidth < 64 else v
        else:
            x = builder.sitofp(v, wide) if aryty.dtype.signed else builder.uitofp(v, wide)
        if count < 4:  # lanes count..3: ``pad``
            take = ir.Constant(ir.VectorType(ir.IntType(32), 4), [j if j < count else count for j in range(4)])
            x = builder.shuffle_vector(x, _splat(builder, pad, count), take)
        chunks.append(x)
    return chunks


def _tree(builder: ir.IRBuilder, chunks: list[ir.Value], combine) -> ir.Value:
    """Combine 4-lane chunks pairwise, then the 4 lanes of the result; no shuffle crosses a chunk
    until the last 4 lanes (a power-of-two padding of 20 lanes to 32 cost ~3x the instructions)."""
    i32 = ir.IntType(32)
    while len(chunks) > 1:
        paired = [combine(chunks[j], chunks[j + 1]) for j in range(0, len(chunks) - 1, 2)]
        chunks = paired + ([chunks[-1]] if len(chunks) % 2 else [])
    vec, width = chunks[0], 4
    while width > 1:
        half = width // 2
        undef = ir.Constant(vec.type, ir.Undefined)
        lo = builder.shuffle_vector(vec, undef, ir.Constant(ir.VectorType(i32, half), list(range(half))))
        hi = builder.shuffle_vector(vec, undef, ir.Constant(ir.VectorType(i32, half), list(range(half, width))))
        vec, width = combine(lo, hi), half
    return builder.extract_element(vec, ir.Constant(i32, 0))


def _field_reduction(kind: str):
    """An intrinsic ``(values, start, stop, init) -> float64`` over a slice of a record's array field.

    ``sum``: ``init`` plus the sum, pairwise; ``max``: of ``init`` and the values. The order
    differs from a left-to-right loop, so a caller uses the sums only where every partial sum
    is exact (then any order gives the same bits), and max only on values without NaN or -0.0.
    """

    @intrinsic(prefer_literal=True)
    def reduction(typingctx, values, start, stop, init):
        if not (isinstance(values, types.NestedArray) and isinstance(start, types.IntegerLiteral)
                and isinstance(stop, types.IntegerLiteral) and isinstance(init, types.Float)):  # fmt: skip
            return None
        lo, hi = start.literal_value, stop.literal_value
        if not 0 <= lo < hi <= values.shape[0]:
            return None

        def codegen(context, builder, signature, args):
            aryty, ary = signature.args[0], args[0]
            first = context.cast(builder, args[3], signature.args[3], types.float64)
            if kind == "max":

                def larger(a, b):
                    return builder.select(builder.fcmp_ordered(">", a, b), a, b)

                chunks = _widened_chunks(context, builder, aryty, ary, lo, hi, first)
                return larger(first, _tree(builder, chunks, larger))
            chunks = _widened_chunks(context, builder, aryty, ary, lo, hi, ir.Constant(ir.DoubleType(), 0.0))
            return builder.fadd(first, _tree(builder, chunks, builder.fadd))

        return types.float64(values, start, stop, init), codegen

    return reduction


field_sum = _field_reduction("sum")
field_max = _field_reduction("max")


@intrinsic
def all_zero_or_at_least(typingctx, values, tiny):
    """True when every value of a record's float array field is +0.0 or >= ``tiny`` (as IEEE bits).

    With values already validated in [0, 1] and ``tiny`` = 2**-24, every value is a multiple
    of 2**-47: float64 sums of a few dozen of them are exact, in any order.
    """
    if not isinstance(values, types.NestedArray) or not isinstance(values.dtype, types.Float):
        return None
    count, dtype = values.shape[0], values.dtype

    def codegen(context, builder, signature, args):
        bits_t = ir.IntType(dtype.bitwidth)
        # loaded as floats, as every other use of the field: LLVM then shares one load
        v = builder.bitcast(_field_vector(context, builder, signature.args[0], args[0]), ir.VectorType(bits_t, count))
        t = builder.bitcast(context.cast(builder, args[1], signature.args[1], dtype), bits_t)
        zero = builder.icmp_unsigned("==", v, ir.Constant(v.type, [0] * count))
        big = builder.icmp_signed(">=", v, _splat(builder, t, count))  # -0.0 and negatives: sign bit set, < 0
        ok = builder.or_(zero, big)
        mask = builder.bitcast(ok, ir.IntType(count))
        return builder.icmp_unsigned("==", mask, ir.Constant(ir.IntType(count), (1 << count) - 1))

    return types.boolean(values, tiny), codegen


def _field_vector(context, builder, aryty, ary) -> ir.Value:
    """A record's whole array field as one LLVM vector of its own element type."""
    elt = context.get_data_type(aryty.dtype)
    data = context.make_array(aryty)(context, builder, value=ary).data
    return builder.load(builder.bitcast(data, ir.VectorType(elt, aryty.shape[0]).as_pointer()), align=1)


def _lanes(builder: ir.IRBuilder, vec: ir.Value, start: int, count: int) -> ir.Value:
    """Lanes ``start .. start + count - 1`` of ``vec`` as a vector of ``count``."""
    undef = ir.Constant(vec.type, ir.Undefined)
    idx = ir.Constant(ir.VectorType(ir.IntType(32), count), list(range(start, start + count)))
    return builder.shuffle_vector(vec, undef, idx)


def _vabs(builder: ir.IRBuilder, vec: ir.Value) -> ir.Value:
    """``|vec|`` lane by lane (llvm.fabs: clears the sign bits)."""
    name = f"llvm.fabs.v{vec.type.count}f64"
    fn = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vec.type, [vec.type]), name)
    return builder.call(fn, [vec])


def _mask_bits(builder: ir.IRBuilder, flags: ir.Value) -> ir.Value:
    """A vector of i1 as an int64 whose bit j is lane j."""
    n = flags.type.count
    return builder.zext(builder.bitcast(flags, ir.IntType(n)), ir.IntType(64))


def near_masks(first: tuple[int, ...]) -> Any:
    """An intrinsic ``(values, last, tol) -> (near, lag_1, ..., lag_L)``, L = ``len(first)``: bit masks of
    closeness in the sequence ``a`` = (``values`` widened to float64, then ``last``).

    ``near``: bit j set where ``|a[j] - last| <= tol`` (j < n, n the field's length). ``lag_L``: bit j
    set where ``|s[j] - s[j + L]| <= tol``, ``s[j] = a[j + 1] - a[j]`` the strides, for j in
    ``first[L - 1] <= j < n - L`` only (the bits a caller reads; the others are 0). Each difference is
    the float64 one a scalar loop computes (``|x - y|`` equals ``|y - x|`` exactly), so the masks are
    those loops' answers. Everything is in 4-lane chunks loaded from the field at their offset (a
    ``vcvtps2pd`` each, shared between lags): no lane of a 20-lane vector is shifted across AVX2's
    128-bit halves (that took ~300 instructions a record for 8 lags).
    """

    @intrinsic
    def masks(typingctx, values, last, tol):
        if not (isinstance(values, types.NestedArray) and values.ndim == 1 and isinstance(values.dtype, types.Float)):
            return None
        n = values.shape[0]
        if not all(0 <= f < n - lag for lag, f in enumerate(first, 1)):
            return None
        ret = types.UniTuple(types.int64, len(first) + 1)

        def codegen(context, builder, signature, args):
            f64, i64 = ir.DoubleType(), ir.IntType(64)
            elt = context.get_data_type(values.dtype)
            base = context.make_array(signature.args[0])(context, builder, value=args[0]).data
            cur = context.cast(builder, args[1], signature.args[1], types.float64)
            tol_v = context.cast(builder, args[2], signature.args[2], types.float64)
            loaded: dict[tuple[int, int], ir.Value] = {}
            strides: dict[tuple[int, int], ir.Value] = {}

            def a(start: int, count: int) -> ir.Value:
                """a[start:start + count] as float64 (a[n] is ``last``)."""
                if (start, count) not in loaded and start == n:
                    loaded[start, count] = _splat(builder, cur, count)
                if (start, count) not in loaded:
                    inside = min(count, n - start)
                    ptr = builder.gep(base, [ir.Constant(i64, start)])
                    v = builder.load(builder.bitcast(ptr, ir.VectorType(elt, inside).as_pointer()), align=1)
                    x = builder.fpext(v, ir.VectorType(f64, inside)) if values.dtype.bitwidth < 64 else v
                    if inside < count:  # the last lane is ``last``
                        take = ir.Constant(ir.VectorType(ir.IntType(32), count), list(range(count)))
                        x = builder.shuffle_vector(x, _splat(builder, cur, inside), take)
                    loaded[start, count] = x
                return loaded[start, count]

            def s(start: int, count: int) -> ir.Value:
                if (start, count) not in strides:
                    strides[start, count] = builder.fsub(a(start + 1, count), a(start, count))
                return strides[start, count]

            def bits(flags: ir.Value, shift: int) -> ir.Value:
                return builder.shl(_mask_bits(builder, flags), ir.Constant(i64, shift))

            def close(x: ir.Value, y: ir.Value) -> ir.Value:
                count = x.type.count
                return builder.fcmp_ordered("<=", _vabs(builder, builder.fsub(x, y)), _splat(builder, tol_v, count))

            out = []
            mask = ir.Constant(i64, 0)
            for c in range(0, n, 4):
                count = min(4, n - c)
                mask = builder.or_(mask, bits(close(a(c, count), _splat(builder, cur, count)), c))
            out.append(mask)
            for lag, lo in enumerate(first, 1):
                mask = ir.Constant(i64, 0)
                for c in range(lo, n - lag, 4):
                    count = min(4, n - lag - c)
                    mask = builder.or_(mask, bits(close(s(c, count), s(c + lag, count)), c))
                out.append(mask)
            return context.make_tuple(builder, signature.return_type, out)

        return ret(values, last, tol), codegen

    return masks


@intrinsic(prefer_literal=True)
def equal_lag_masks(typingctx, values, lags):
    """For lag L = 1..``lags`` (literal), an int64 with bit j set where ``values[j] == values[j + L]``
    (j < n - L) over a record's integer array field, every comparison a vector one."""
    if not (isinstance(values, types.NestedArray) and values.ndim == 1 and isinstance(values.dtype, types.Integer)
            and isinstance(lags, types.IntegerLiteral)):  # fmt: skip
        return None
    n, n_lags = values.shape[0], lags.literal_value
    if not 1 <= n_lags < n < 64:
        return None

    def codegen(context, builder, signature, args):
        v = _field_vector(context, builder, signature.args[0], args[0])
        out = []
        for lag in range(1, n_lags + 1):
            same = builder.icmp_unsigned("==", _lanes(builder, v, 0, n - lag), _lanes(builder, v, lag, n - lag))
            out.append(_mask_bits(builder, same))
        return context.make_tuple(builder, signature.return_type, out)

    return types.UniTuple(types.int64, n_lags)(values, lags), codegen


@intrinsic
def popcount(typingctx, bits):
    """The number of set bits of an int64 (one popcnt)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.ctpop", [i64])
        return builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.int64)])

    return types.int64(bits), codegen


@intrinsic
def highest_bit(typingctx, bits):
    """The index of the highest set bit of an int64, -1 when none is set (one lzcnt)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.ctlz", [i64, ir.IntType(1)])
        x = context.cast(builder, args[0], signature.args[0], types.int64)
        lz = builder.call(fn, [x, ir.Constant(ir.IntType(1), 0)])
        return builder.sub(ir.Constant(i64, 63), lz)

    return types.int64(bits), codegen
