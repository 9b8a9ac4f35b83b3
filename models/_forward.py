"""The compiled forward pass: run a model of a ``Bank`` over a float32 batch, in numba.

``forward(bank, mid, x, n, out, scratch)`` is callable from other compiled code (the
daemon's pass calls it on a miss, with no return to Python) and from Python
(``CompiledRunner``). The batch runs through the model's program ``TILE_ROWS`` rows at a
time; dense layers use the register-blocked kernel of ``_simd``. Row-wise ops (sigmoid,
softmax) first copy their operands into a work area with the rows as lanes, so their
``exp`` runs 8 rows per instruction (it ran one value at a time: softmax took 12 µs of
threat's 107 per 256 rows, now ~3); the rest are short row loops. Arithmetic is float32
throughout, as in LiteRT, and every value is computed as it was row by row (same
operations, same order), so the outputs did not change by a bit.

Every function here uses numba's ``numpy`` error model: a division by zero gives inf or
NaN as IEEE (and LiteRT) do, never an exception. Under the default ``python`` model a
NaN row reaching a ``DIV`` op (the memory model's candidate pick divides by the number
of tied best scores, 0 when they are NaN) raised ZeroDivisionError out of the daemon's
pass and stopped its poll loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _ops as o
from ._simd import LANES, float32_from_bits, tile_1x1, tile_1x2, tile_1x4, tile_1x8, tile_4x1, tile_4x2, tile_8x1

_F = 4  # bytes per float32


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _dense(s, ops, i, consts, rows):
    """Dense layer of op ``i`` over scratch rows [0, rows)."""
    n_in = ops[i, o.OP_A_WIDTH]
    ws = ops[i, o.OP_W_STRIDE]
    ss = s.shape[1]
    x = s.ctypes.data + _F * ops[i, o.OP_A]
    y = s.ctypes.data + _F * ops[i, o.OP_OUT]
    w = consts.ctypes.data + _F * ops[i, o.OP_W]
    b = consts.ctypes.data + _F * ops[i, o.OP_BIAS]
    relu = ops[i, o.OP_RELU]
    r = 0
    while r + 8 <= rows:
        xr = x + _F * r * ss
        yr = y + _F * r * ss
        j = 0
        while j + 2 * LANES <= ws:
            tile_4x2(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
            tile_4x2(xr + _F * 4 * ss, ss, w + _F * j, ws, b + _F * j, yr + _F * (4 * ss + j), ss, n_in, relu)
            j += 2 * LANES
        if j < ws:  # one block left (a head's only one): 8 rows keep both FMA units busy, 4 rows half
            tile_8x1(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
        r += 8
    while r + 4 <= rows:
        xr = x + _F * r * ss
        yr = y + _F * r * ss
        j = 0
        while j + 2 * LANES <= ws:
            tile_4x2(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
            j += 2 * LANES
        if j < ws:
            tile_4x1(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
        r += 4
    while r < rows:
        xr = x + _F * r * ss
        yr = y + _F * r * ss
        j = 0
        while j + 8 * LANES <= ws:
            tile_1x8(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
            j += 8 * LANES
        if j + 4 * LANES <= ws:
            tile_1x4(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
            j += 4 * LANES
        if j + 2 * LANES <= ws:
            tile_1x2(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
            j += 2 * LANES
        if j < ws:
            tile_1x1(xr, ss, w + _F * j, ws, b + _F * j, yr + _F * j, ss, n_in, relu)
        r += 1


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _exp(x):
    """float32 exp (Cephes expf: 2**n times a degree-6 polynomial), no libm call.

    Inlined arithmetic, so a loop over it can vectorise; within 2 ulp of expf on
    [-87, 88], clamped outside (a sigmoid saturates there anyway).
    """
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - n * _LN2_HI - n * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _u(i):
    """An index numba need not wrap: unsigned (callers' indices are never negative).

    numba cannot prove ``a + j`` non-negative and wraps each such signed index (a select
    per element), which kept loops scalar (the tile's copy-in took 8 µs of workload's 75
    per 256 rows). Row views would do too, but each costs an atomic incref/decref pair,
    ~0.2 µs per batch-1 call over a model's ops.
    """
    return np.uint64(i)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _move(src, ra, a, dst, rb, b, width):
    """``dst[rb, b:b + width] = src[ra, a:a + width]`` (2-d float32)."""
    for j in range(width):
        dst[rb, _u(b + j)] = src[ra, _u(a + j)]


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _copy(s, ops, i, consts, rows):
    dst, a, width = ops[i, o.OP_OUT], ops[i, o.OP_A], ops[i, o.OP_WIDTH]
    for r in range(rows):  # element loops: numba's slice assignment costs ~20x more here
        _move(s, r, a, s, r, dst, width)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _gather(s, ops, i, consts, rows):
    dst, a, width, at = ops[i, o.OP_OUT], ops[i, o.OP_A], ops[i, o.OP_WIDTH], ops[i, o.OP_W]
    for j in range(width):
        src = a + np.int64(consts[at + j])
        for r in range(rows):
            s[r, dst + j] = s[r, src]


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _columns_in(s, t, a, width, rows):
    """Columns [a, a + width) of the tile into ``t``'s rows 0..width-1 (rows become lanes)."""
    for j in range(width):
        for r in range(rows):
            t[j, r] = s[r, a + j]


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _logistic(s, t, ops, i, consts, rows):
    dst, a, width = ops[i, o.OP_OUT], ops[i, o.OP_A], ops[i, o.OP_WIDTH]
    one = np.float32(1.0)
    if rows < LANES:  # a batch's tail, batch 1: less than a vector of rows, transposing costs more
        for r in range(rows):
            for j in range(width):
                s[r, _u(dst + j)] = one / (one + _exp(-s[r, _u(a + j)]))
        return
    _columns_in(s, t, a, width, rows)
    for j in range(width):
        tj = t[j]
        for r in range(rows):  # contiguous: 8 rows per instruction
            tj[r] = one / (one + _exp(-tj[r]))
    for r in range(rows):
        for j in range(width):
            s[r, dst + j] = t[j, r]


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _softmax(s, t, ops, i, consts, rows):
    """Per row, as LiteRT: max, exp((x - max) * beta) in column order, summed in column order, divided."""
    dst, a, width = ops[i, o.OP_OUT], ops[i, o.OP_A], ops[i, o.OP_WIDTH]
    beta = consts[ops[i, o.OP_PARAM]]
    if rows < LANES:  # as _logistic: row by row, the same operations in the same order
        for r in range(rows):
            m = s[r, a]
            for j in range(1, width):
                m = max(m, s[r, _u(a + j)])
            total = np.float32(0.0)
            for j in range(width):
                e = _exp((s[r, _u(a + j)] - m) * beta)
                s[r, _u(dst + j)] = e
                total += e
            for j in range(width):
                s[r, _u(dst + j)] /= total
        return
    _columns_in(s, t, a, width, rows)
    m, total = t[width], t[width + 1]
    for r in range(rows):
        m[r] = t[0, r]
        total[r] = np.float32(0.0)
    for j in range(1, width):
        tj = t[j]
        for r in range(rows):
            m[r] = max(m[r], tj[r])
    for j in range(width):
        tj = t[j]
        for r in range(rows):
            e = _exp((tj[r] - m[r]) * beta)
            tj[r] = e
            total[r] += e
    for r in range(rows):
        for j in range(width):
            s[r, dst + j] = t[j, r] / total[r]


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _reduce(s, ops, i, consts, rows):
    dst, a, width = ops[i, o.OP_OUT], ops[i, o.OP_A], ops[i, o.OP_A_WIDTH]
    is_max = ops[i, o.OP_KIND] == o.K_REDUCE_MAX
    for r in range(rows):
        acc = s[r, a]
        for j in range(1, width):
            acc = max(acc, s[r, a + j]) if is_max else acc + s[r, a + j]
        s[r, dst] = acc


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _binary(s, ops, i, consts, rows):
    """a (op) b with a width-1 operand broadcast; b may be a constant row."""
    kind = ops[i, o.OP_KIND]
    dst, width = ops[i, o.OP_OUT], ops[i, o.OP_WIDTH]
    a, wa = ops[i, o.OP_A], ops[i, o.OP_A_WIDTH]
    b, wb, b_const = ops[i, o.OP_B], ops[i, o.OP_B_WIDTH], ops[i, o.OP_B_CONST]
    for r in range(rows):
        for j in range(width):
            x = s[r, _u(a + (0 if wa == 1 else j))]
            k = _u(b + (0 if wb == 1 else j))
            y = consts[k] if b_const else s[r, k]
            if kind == o.K_ADD:
                v = x + y
            elif kind == o.K_MUL:
                v = x * y
            elif kind == o.K_DIV:
                v = x / y
            else:  # K_GREATER_EQUAL: booleans are 0/1 floats
                v = np.float32(1.0) if x >= y else np.float32(0.0)
            s[r, _u(dst + j)] = v


@njit(nogil=True, cache=True, error_model="numpy")
def forward(bank, mid, x, n, out, scratch):
    """Raw outputs ``out[:n, :k]`` of model ``mid`` for features ``x[:n, :f]`` (float32, may be wider).

    ``scratch`` comes from ``scratch_for(bank)``: ``scratch[0]`` is the activation tile,
    its row count the tile size (read here, not from ``_ops``: numba's cache would keep a
    stale constant of another module); ``scratch[1]``'s memory, seen as [columns, rows],
    is where row-wise ops put their operands with the rows as lanes.
    """
    m = bank.models[mid]
    ops, consts = bank.ops, bank.consts
    start, stop = m[o.MODEL_OP_START], m[o.MODEL_OP_STOP]
    col_in, n_in, col_out, n_out = m[o.MODEL_IN], m[o.MODEL_N_IN], m[o.MODEL_OUT], m[o.MODEL_N_OUT]
    if m[o.MODEL_VERSION] == 0:
        raise ValueError("forward: the bank holds no such model")
    # x and out may be wider than the model: the daemon keeps the widest model's width.
    if (
        scratch.shape[2] < m[o.MODEL_STRIDE]
        or x.shape[0] < n
        or x.shape[1] < n_in
        or out.shape[0] < n
        or out.shape[1] < n_out
    ):
        raise ValueError("forward: scratch, x or out is too small for this model")
    s = scratch[0]
    tile = s.shape[0]
    t = scratch[1].reshape((s.shape[1], tile))
    for first in range(0, n, tile):
        rows = min(tile, n - first)
        for r in range(rows):
            _move(x, first + r, 0, s, r, col_in, n_in)
        for i in range(start, stop):
            kind = ops[i, o.OP_KIND]
            if kind == o.K_DENSE:
                _dense(s, ops, i, consts, rows)
            elif kind == o.K_COPY:
                _copy(s, ops, i, consts, rows)
            elif kind == o.K_LOGISTIC:
                _logistic(s, t, ops, i, consts, rows)
            elif kind == o.K_SOFTMAX:
                _softmax(s, t, ops, i, consts, rows)
            elif kind == o.K_GATHER:
                _gather(s, ops, i, consts, rows)
            elif kind == o.K_REDUCE_MAX or kind == o.K_REDUCE_SUM:
                _reduce(s, ops, i, consts, rows)
            else:
                _binary(s, ops, i, consts, rows)
        for r in range(rows):
            _move(s, r, col_out, out, first + r, 0, n_out)
