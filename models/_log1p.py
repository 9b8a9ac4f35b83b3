"""``log1p`` for x >= 0, inline and branch-free, so a loop over a column of values vectorises.

libm's ``log1p`` is an opaque call (8-14 ns each; workload encodes 11 per record, memory
24), which also keeps LLVM from vectorising the loop around it. This is the same
algorithm as glibc's double ``log1p`` (SunPro fdlibm's, with glibc's pairing of the
polynomial terms and of the ``k*ln2_lo + c`` correction), operation for operation and
without fused multiply-adds, so it returns the same bits as glibc's generic ``log1p``
(checked against ``math.log1p`` in tests/test_models_encode.py). Every path is computed
and the answer selected, so the loop body has no branch.

Domain: finite x >= 0 (every value the encoders take a log1p of is validated to be one),
-0.0 included: validation accepts it (-0.0 >= 0), glibc returns it, and every function
here returns x itself for x == 0 (the logical high word of -0.0 is 0x80000000, which the
reduction would otherwise read as a huge value).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_LN2_HI = 6.93147180369123816490e-01  # 0x3fe62e42fee00000
_LN2_LO = 1.90821492927058770002e-10  # 0x3dea39ef35793c76
# Minimax coefficients of R(z) = Lp1*z + ... + Lp7*z**7 on [0, 0.1716] (fdlibm).
_LP1 = 6.666666666666735130e-01
_LP2 = 3.999999999940941908e-01
_LP3 = 2.857142874366239149e-01
_LP4 = 2.222219843214978396e-01
_LP5 = 1.818357216161805012e-01
_LP6 = 1.531383769920937332e-01
_LP7 = 1.479819860511658591e-01
_LOW32 = 0xFFFFFFFF


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64, as int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """The float64 whose IEEE bits are ``b``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def pick(typingctx, cond, a, b):
    """``a if cond else b`` as an LLVM select: both are computed, no branch."""
    if not isinstance(cond, types.Boolean) or a != b:
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return a(cond, a, b), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (llvm.fma: one vfmadd on this host, vectorisable)."""

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f64], ir.FunctionType(f64, [f64] * 3))
        return builder.call(fn, args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@intrinsic
def _high_word(typingctx, x):
    """The upper 32 bits of a float64's IEEE bits, as int64 (a logical shift: AVX2 has no 64-bit arithmetic one)."""

    def codegen(context, builder, signature, args):
        return builder.lshr(builder.bitcast(args[0], ir.IntType(64)), ir.Constant(ir.IntType(64), 32))

    return types.int64(types.float64), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _series(f, hfsq):
    """``s * (hfsq + R)``, s = f / (2 + f), R a polynomial in s**2: log(1 + f) = f - (hfsq - this)."""
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    z6 = z4 * z2
    r = _fma(z6, _fma(z, _LP7, _LP6), _fma(z4, _fma(z, _LP5, _LP4), _fma(z, _LP1, z2 * _fma(z, _LP3, _LP2))))
    return (r + hfsq) * s


@numba.njit(nogil=True, cache=True, inline="always")
def _log1p(x, one_plus_x_exact):
    """glibc's log1p of finite ``x >= 0``; ``one_plus_x_exact`` (a constant): skip the rounding correction of 1 + x."""
    hx = _high_word(x)
    # 1 + x = 2**k * u, sqrt(2)/2 <= u < sqrt(2); c corrects for the rounding of 1 + x.
    big = hx >= 0x43400000  # x >= 2**53: 1 + x rounds to x
    u0 = pick(big, x, 1.0 + x)
    hu0 = _high_word(u0)
    k0 = (hu0 >> 20) - 1023
    if one_plus_x_exact:
        c0 = 0.0  # what glibc computes then: (1 - (u0 - x)) / u0 or (x - (u0 - 1)) / u0 with u0 = 1 + x exactly
    else:
        c0 = pick(big, 0.0, pick(k0 > 0, 1.0 - (u0 - x), x - (u0 - 1.0)) / pick(big, 1.0, u0))  # u0 = x: -0.0 too
    m = hu0 & 0x000FFFFF
    low = m < 0x6A09E
    k1 = pick(low, k0, k0 + 1)
    hu1 = pick(low, m, (0x00100000 - m) >> 2)
    u1 = _from_bits((pick(low, m | 0x3FF00000, m | 0x3FE00000) << 32) | (_bits(u0) & _LOW32))
    # Small x (< 0.41422) needs no reduction: k = 0, f = x, no correction.
    small = hx < 0x3FDA827A
    k = pick(small, 0, k1)
    f = pick(small, x, u1 - 1.0)
    c = pick(small, 0.0, c0)
    hu = pick(small, 1, hu1)
    kd = np.float64(k)
    hfsq = 0.5 * f * f
    klo = _fma(kd, _LN2_LO, c)
    # |f| < 2**-20 (only when reduced): a short series; f == 0: k * ln2.
    r_tiny = _fma(-f, 0.66666666666666666, 1.0) * hfsq
    tiny = _fma(kd, _LN2_HI, -((r_tiny - klo) - f))
    zero_f = _fma(kd, _LN2_HI, klo)
    sr = _series(f, hfsq)
    general = pick(k == 0, f - (hfsq - sr), _fma(kd, _LN2_HI, -((hfsq - (klo + sr)) - f)))
    out = pick(hu != 0, general, pick(f == 0.0, zero_f, tiny))
    # x < 2**-29: x - x*x/2 (x itself below 2**-54).
    tiny_x = pick(hx < 0x3C900000, x, _fma(-(x * x), 0.5, x))
    return pick(x == 0.0, x, pick(hx < 0x3E200000, tiny_x, out))  # +-0: itself


@numba.njit(nogil=True, cache=True, inline="always")
def log1p(x):
    """``log1p(x)`` for finite ``x >= 0``: glibc's (FMA build) answer, bit for bit."""
    return _log1p(x, False)


@numba.njit(nogil=True, cache=True, inline="always")
def log1p_exact(x):
    """``log1p(x)`` for finite ``x >= 0`` where ``1 + x`` is exact in float64 (or x < 2**-29 or x >= 2**53),
    as for any float32 value and any integer: glibc's answer bit for bit, one division fewer.

    glibc's correction term c = (the rounding error of 1 + x) / (1 + x) is then 0.
    """
    return _log1p(x, True)


@numba.njit(nogil=True, cache=True, inline="always")
def _reduce(u0):
    """``(k, u)`` with u0 = 2**k * u, sqrt(2)/2 <= u < sqrt(2), for finite ``u0 >= 1``."""
    hu0 = _high_word(u0)
    m = hu0 & 0x000FFFFF
    low = m < 0x6A09E
    k = pick(low, (hu0 >> 20) - 1023, (hu0 >> 20) - 1022)
    return k, _from_bits((pick(low, m | 0x3FF00000, m | 0x3FE00000) << 32) | (_bits(u0) & _LOW32))


@numba.njit(nogil=True, cache=True, inline="always")
def _reduced(x):
    """``(k, u)`` with 1 + x = 2**k * u, sqrt(2)/2 <= u < sqrt(2), for finite ``x >= 0`` where 1 + x is exact."""
    return _reduce(pick(_high_word(x) >= 0x43400000, x, 1.0 + x))  # x >= 2**53: 1 + x rounds to x


@numba.njit(nogil=True, cache=True, inline="always")
def _off_main_path(x):
    """Whether glibc takes another path than ``_log1p_main``'s for ``x``: 0 < x < 2**-29, or x >= 0.41422
    with 1 + x within 2**-20 of a power of two but not one (0 < |f| < 2**-20, its short series; no
    input was found where the general path gives other bits there, 291k tried, but glibc's own
    choice is kept). x = 2**k - 1 (f = 0, common: integers, strides of 1, 3, 7 lines) stays on the
    main path: glibc's k*ln2_hi + (k*ln2_lo + c) is what the general formula gives at f = 0."""
    hx = _high_word(x)
    u = _reduced(x)[1]
    m = _high_word(u) & 0x000FFFFF
    f_zero = (m == 0) & ((_bits(u) & _LOW32) == 0)
    return ((hx < 0x3E200000) & (x != 0.0)) | ((hx >= 0x3FDA827A) & (((m == 0) & ~f_zero) | (m >= 0xFFFFD)))


@numba.njit(nogil=True, cache=True, inline="always")
def _log1p_main(x):
    """``log1p_exact(x)`` where ``not _off_main_path(x)``: glibc's general path alone.

    Below 0.41422 glibc does not reduce (k = 0, f = x) but reducing gives k = 0 and f = x
    too when 1 + x is exact, and its k = 0 formula f - (hfsq - sr) is the negation of the
    one below with the same rounding; at x = 0 both give +0.
    """
    k, u = _reduced(x)
    return pick(x == 0.0, x, _general(k, u - 1.0))  # +-0: itself


@numba.njit(nogil=True, cache=True, inline="always")
def _general(k, f):
    """glibc's general path from the reduction 1 + x = 2**k * (1 + f), its correction c = 0."""
    kd = np.float64(k)
    hfsq = 0.5 * f * f
    klo = kd * _LN2_LO  # glibc: fma(k, ln2_lo, c) with c = 0
    sr = _series(f, hfsq)
    return _fma(kd, _LN2_HI, -((hfsq - (klo + sr)) - f))


_UINT_EXACT = 2.0**53  # integers below it: 1 + x is exact


@numba.njit(nogil=True, cache=True, inline="always")
def log1p_uint_main(x):
    """``(log1p(x) by glibc's general path, off)`` for an integer-valued ``x >= 0`` (not -0.0); ``off``:
    glibc takes another path (``_off_main_path``) or x >= 2**53, where the first value is not its answer.

    For such x glibc's tiny-x paths never apply (x is 0 or >= 1), 1 + x is exact below 2**53, and at
    x = +0 the general formula gives +0 (k = f = 0), so none of ``_log1p_main``'s selects for them is
    needed; off its path is then ``0 < |f| < 2**-20``'s short series: the high word's mantissa bits
    0 (low case) with f != 0, or >= 0xFFFFD (high case, f in [-3 * 2**-21, 0))."""
    k, u = _reduce(1.0 + x)
    f = u - 1.0
    m = _high_word(u) & 0x000FFFFF
    off = ((m == 0) & (f != 0.0)) | (m >= 0xFFFFD) | (x >= _UINT_EXACT)
    return _general(k, f), off


@numba.njit(nogil=True, cache=True, error_model="numpy")
def log1p_uint_into(x, y, n):
    """``y[:n] = log1p(x[:n])`` for integer-valued ``x`` (float64 of uint64 values; ``y`` must not
    overlap ``x``): glibc's bits. One pass of ``log1p_uint_main`` (fewer instructions a value than
    ``log1p_exact_into``'s: workload's 2,816 values a batch of 256); if some value is off its path,
    the column again by ``log1p_exact_into``, which takes every path."""
    off = False
    for i in range(n):
        v, o = log1p_uint_main(x[i])
        y[i] = v
        off |= o
    if off:
        log1p_exact_into(x, y, n)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def log1p_exact_column(x, n):
    """``x[:n] = log1p_exact(x[:n])`` in place: every ``1 + x[i]`` must be exact (float32 values, integers).

    A first pass asks whether any value is off glibc's general path; if none is (the
    common case: no tiny values, none within 2**-20 of 2**k - 1), the column takes the
    general path alone (no selects between paths: ~1/3 fewer instructions), else every
    path, as ``log1p_exact``.
    """
    off = False
    for i in range(n):
        off |= _off_main_path(x[i])
    if off:
        for i in range(n):
            x[i] = log1p_exact(x[i])
    else:
        for i in range(n):
            x[i] = _log1p_main(x[i])


@numba.njit(nogil=True, cache=True, inline="always")
def _correction_is_zero(x):
    """Whether glibc's correction term for the rounding of 1 + x is +0 for finite ``x >= 0``:
    its numerator, computed as glibc does, is 0 (1 + x exact), or x >= 2**53 (no correction)."""
    big = _high_word(x) >= 0x43400000
    u0 = 1.0 + x
    k0 = (_high_word(u0) >> 20) - 1023
    return big | (pick(k0 > 0, 1.0 - (u0 - x), x - (u0 - 1.0)) == 0.0)


# numpy error model: a python-model division checks for zero and that exit stops LLVM vectorising.
@numba.njit(nogil=True, cache=True, error_model="numpy")
def log1p_column(x, n):
    """``x[:n] = log1p(x[:n])`` in place, over a contiguous float64 column."""
    for i in range(n):
        x[i] = log1p(x[i])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def log1p_exact_into(x, y, n):
    """``y[:n] = log1p_exact(x[:n])`` (``y`` must not overlap ``x``), as ``log1p_exact_column``
    but in one pass where no value is off glibc's general path: that pass computes the
    general path and asks the question together (they share the reduction); only if some
    value is off does a second pass take every path."""
    off = False
    for i in range(n):
        off |= _off_main_path(x[i])
        y[i] = _log1p_main(x[i])
    if off:
        for i in range(n):
            y[i] = log1p_exact(x[i])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def log1p_into(x, y, n):
    """``y[:n] = log1p(x[:n])`` (``y`` must not overlap ``x``).

    A first pass asks whether glibc's correction term is 0 for every value (``1 + x``
    exact: the common case for memory's distances, differences of float32 addresses);
    then ``log1p_exact_into`` gives the same bits (c = 0 / u is +0 either way) with one
    division a value fewer.
    """
    exact = True
    for i in range(n):
        exact &= _correction_is_zero(x[i])
    if exact:
        log1p_exact_into(x, y, n)
    else:
        for i in range(n):
            y[i] = log1p(x[i])
