"""A model's staged records -> float32 feature rows, a whole batch at once: what the daemon's pass runs.

``ROW_ENCODERS[mid](payloads, rows, n, out, err, scratch)`` encodes records
``payloads[rows[r]]`` for ``r < n`` into ``out[r]`` and sets ``err[r]`` (0, or the 1-based
invalid field, as ``encode_<model>`` returns). The features are those of the per-record
encoders in ``_encode``, bit for bit (tests/test_models_encode.py), from the same parts
(``check_*``, ``linear_*``, ``logs_*``), in three passes over the batch:

1. per record: validate, write every feature that needs no logarithm, and put the
   arguments of its ``log1p`` calls into one contiguous float64 column of ``scratch``
   (record r's at ``r * N_LOGS``);
2. ``log1p`` over that column in one loop, which LLVM vectorises (``_log1p``: 4 values
   per AVX2 instruction, branch-free), instead of 11-24 opaque libm calls per record;
3. per record: the logarithmic features from the column.

Memory's 24 distances a record are whole lines wherever its addresses are on the line
grid: their features come from a table (``M_LINE_DELTA``, the definition's values), and
only the others take the ``log1p`` column.

``scratch`` is float64, at least ``scratch_size(n)`` long (``new_scratch``).
"""

from __future__ import annotations

import numba
import numpy as np

from kernel_abi import ModelId

from ._encode import (
    F_N_LOGS,
    M_LINE_DELTA,
    M_LINE_MAX,
    M_N_LOGS,
    T_N_LOGS,
    W_N_LOGS,
    check_failure,
    check_memory,
    check_threat,
    check_workload,
    enc_delta_memory,
    gap_stats_memory,
    gaps_memory,
    linear_failure,
    linear_memory,
    linear_threat,
    linear_workload,
    log_arg_memory,
    logs_failure,
    logs_threat,
    logs_workload,
    timing_features_memory,
)
from ._log1p import log1p_exact_into, log1p_into, log1p_uint_into, pick

_LINE_MAX = float(M_LINE_MAX)
_GAPS = 19  # memory's inter-arrival gaps per record
#: float64 scratch per record: a column of log1p arguments and one of their log1p (memory
#: also keeps its 24 distances and the indices of those off the line grid), then memory's
#: gaps (a row per gap, a column per record) and their mean and spread.
SCRATCH_PER_ROW = 4 * M_N_LOGS + _GAPS + 2
_GAP_PAD = 20  # most float64 a gap row is padded by (_gap_stride)


def scratch_size(rows: int) -> int:
    """float64 values of scratch ``ROW_ENCODERS`` needs for up to ``rows`` records."""
    return rows * SCRATCH_PER_ROW + _GAPS * _GAP_PAD


@numba.njit(nogil=True, cache=True, inline="always")
def _gap_stride(n):
    """float64 from one of memory's gap rows to the next for ``n`` records: ``n + 4``, or 16 more
    where that is within 64 bytes (8 float64) of a multiple of 4 KB (512 float64). Rows exactly 2 KB
    apart (n = 256) made each record's 19 stores 4K-alias one another and the loads around them (the
    store buffer compares only the low 12 address bits): writing the gaps took 8.8 µs per 256
    records, 4.6 with rows 32 bytes longer: ~1% of the whole encoder. Batch sizes whose rows come
    near 4 KB apart only every few rows (n = 252: every second) stay within that 1% (35.2 against
    34.9 µs per 256 records for n = 256, measured alternately)."""
    s = n + 4
    return s + 16 if (s + 8) % 512 < 16 else s


def new_scratch(rows: int) -> np.ndarray:
    return np.zeros(scratch_size(rows), np.float64)


# error_model="numpy" throughout: python-model division checks for zero, and that early
# exit stops LLVM from vectorising the loops over columns.
@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _rows(check, linear, logs, k, log1p_col, payloads, rows, n, out, err, scratch):
    """The three passes for a model whose ``linear`` part leaves ``k`` log1p arguments per record,
    ``log1p_col(x, y, m)`` their column's log1p."""
    args, logs_col = scratch[: n * k], scratch[n * k : 2 * n * k]
    for r in range(n):
        p = payloads[rows[r]]
        e = check(p)
        err[r] = e
        if e == 0:
            linear(p, out[r], args[r * k : (r + 1) * k])
        else:
            args[r * k : (r + 1) * k] = 0.0
    log1p_col(args, logs_col, n * k)
    for r in range(n):
        if err[r] == 0:
            logs(logs_col[r * k : (r + 1) * k], out[r])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def rows_workload(payloads, rows, n, out, err, scratch):
    # uint64 values: glibc's general path without the selects integers never need
    _rows(check_workload, linear_workload, logs_workload, W_N_LOGS, log1p_uint_into,
          payloads, rows, n, out, err, scratch)  # fmt: skip


@numba.njit(nogil=True, cache=True, error_model="numpy")
def rows_threat(payloads, rows, n, out, err, scratch):
    # float32 values: 1 + x is exact
    _rows(check_threat, linear_threat, logs_threat, T_N_LOGS, log1p_exact_into, payloads, rows, n, out, err, scratch)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def rows_failure(payloads, rows, n, out, err, scratch):
    # a float32 value: 1 + x is exact
    _rows(check_failure, linear_failure, logs_failure, F_N_LOGS, log1p_exact_into, payloads, rows, n, out, err, scratch)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def rows_memory(payloads, rows, n, out, err, scratch):
    k = M_N_LOGS
    m = n * k
    dists, args, logs, where = scratch[:m], scratch[m : 2 * m], scratch[2 * m : 3 * m], scratch[3 * m : 4 * m]
    gs = _gap_stride(n)
    g = 4 * m + _GAPS * gs
    gaps = scratch[4 * m : g]  # record r's gap j at j * gs + r
    mean, var = scratch[g : g + n], scratch[g + n : g + 2 * n]
    for r in range(n):
        p = payloads[rows[r]]
        e = check_memory(p)
        err[r] = e
        if e == 0:
            linear_memory(p, out[r], dists[r * k : (r + 1) * k])
            gaps_memory(p.access_timestamps, gaps[r:], gs)
        else:
            dists[r * k : (r + 1) * k] = 0.0
            for j in range(_GAPS):
                gaps[j * gs + r] = 0.0
    gap_stats_memory(gaps, n, gs, mean, var)
    for r in range(n):
        if err[r] == 0:
            timing_features_memory(gaps[(_GAPS - 1) * gs + r], mean[r], var[r], out[r])
    # Features 0..23: distances of whole lines from M_LINE_DELTA (no log1p, no division), in a loop
    # that vectorises; any other distance (an address off the line grid) is computed below.
    off = False
    for r in range(n):
        if err[r] == 0:
            for j in range(k):
                d = dists[r * k + j]
                x = log_arg_memory(d)
                line = _whole_lines(x)
                v = M_LINE_DELTA[line]
                out[r, j] = pick(d >= 0.0, v, -v)  # a select, not a branch on the sign
                off |= np.float64(line) != x
    if off:
        _off_grid_memory(dists, n, out, err, args, logs, where)


@numba.njit(nogil=True, cache=True, inline="always")
def _whole_lines(x):
    """The whole lines in a distance's log1p argument ``x`` (<= 2**16: addresses are validated to
    [0, 1]); the distance is on the line grid when this, as a float, is ``x`` itself."""
    # via int32: AVX2 converts float64 to int32 4 lanes at a time (not to int64 or uint32); then
    # unsigned (the same bits: x >= 0), so indexing needs no wraparound test
    return np.uint32(np.int32(min(x, _LINE_MAX)))


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _off_grid_memory(dists, n, out, err, args, logs, where):
    """Features 0..23 of the distances that are not whole lines, by the definition: their log1p
    arguments gathered into ``args`` (their indices into ``where``, as float64), one ``log1p_into``."""
    k = M_N_LOGS
    found = 0
    for r in range(n):
        if err[r] == 0:
            for j in range(k):
                x = log_arg_memory(dists[r * k + j])
                if np.float64(_whole_lines(x)) != x:
                    args[found] = x
                    where[found] = r * k + j
                    found += 1
    log1p_into(args, logs, found)
    for t in range(found):
        i = np.int64(where[t])
        out[i // k, i % k] = enc_delta_memory(logs[t], dists[i])


ROW_ENCODERS = {
    ModelId.WORKLOAD: rows_workload,
    ModelId.THREAT: rows_threat,
    ModelId.FAILURE: rows_failure,
    ModelId.MEMORY: rows_memory,
}
