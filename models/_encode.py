"""Payload record -> float32 feature row, compiled, one function per model.

Each ``encode_<model>(payloads, i, out)`` validates row ``i`` of a 1-D array of the
model's kernel_abi payload dtype (any stride: the daemon passes a view into its
staging buffer) and, when it is valid, writes ``N_FEATURES[mid]`` float32 features
into ``out``. It returns 0, or the 1-based index of the first invalid field in
``PAYLOADS[mid].names`` (the response's ``error_field``). Fields are checked in that
order, so the compiled answer names the same field as ``validate(...)[0]``.

Training encodes its synthetic payload records with these same functions, so there is
one normalisation, documented in docs/MODELS.md.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernel_abi import ModelId

from ._log1p import log1p
from ._simd import (
    all_within,
    all_zero_or_at_least,
    equal_lag_masks,
    field_max,
    field_sum,
    highest_bit,
    near_masks,
    popcount,
)
from ._spec import ADDR_LINE, ADDR_TOL, MEM_LOG_SCALE, RANGES, RATE_LOG_SCALE, TIME_LOG_SCALE, field_index

_W, _T, _F, _M = ModelId.WORKLOAD, ModelId.THREAT, ModelId.FAILURE, ModelId.MEMORY


def _rule(mid: ModelId, name: str) -> tuple[int, float, float]:
    lo, hi = RANGES[mid][name]
    return field_index(mid, name), lo, hi


# (index, lo, hi) per checked field; numba freezes these tuples as constants.
_W_HCPU = _rule(_W, "historical_cpu")
_W_HMEM = _rule(_W, "historical_memory")
_W_HGPU = _rule(_W, "historical_gpu")
_W_CPU = _rule(_W, "current_cpu")
_W_GPU = _rule(_W, "current_gpu")
_W_MEM = _rule(_W, "current_memory")
_W_HOUR = _rule(_W, "time_of_day")
_W_DAY = _rule(_W, "day_of_week")

_T_LAT = _rule(_T, "average_latency")
_T_ERR = _rule(_T, "error_rate")
_T_RES = _rule(_T, "resource_usage")
_T_MSG = _rule(_T, "message_frequency")
_T_HIST = _rule(_T, "historical_threats")
_T_TSL = _rule(_T, "time_since_last_threat")
_T_CNT = _rule(_T, "anomaly_count")
_T_SEV = _rule(_T, "severity_counts")
_T_DIST = _rule(_T, "distinct_anomaly_types")

_F_HEALTH = _rule(_F, "health_score")
_F_CUR = _rule(_F, "current_value")
_F_BASE = _rule(_F, "baseline")
_F_TREND = _rule(_F, "trend")
_F_HIST = _rule(_F, "historical_health")
_F_TSL = _rule(_F, "time_since_last_failure")
_F_FHIST = _rule(_F, "failure_history")

_M_ADDR = _rule(_M, "access_history")
_M_TS = _rule(_M, "access_timestamps")
_M_TYPES = _rule(_M, "access_types")
_M_CUR = _rule(_M, "current_address")
_M_LOC = _rule(_M, "locality_score")

#: Feature columns the networks read back (residual inputs and address candidates).
W_CUR_CPU, W_CUR_MEM, W_CUR_GPU = 10, 22, 21
M_CAND_START, M_N_CAND = 66, 4
#: log1p arguments per record: workload's 10 historical memory values then the current one;
#: threat's latency, message frequency, time since the last threat; failure's time since
#: the last failure; memory's 24 signed address distances (features 0..23).
W_N_LOGS, T_N_LOGS, F_N_LOGS, M_N_LOGS = 11, 3, 1, 24

_LOG65 = math.log1p(64.0)
_LOG_LINES = math.log1p(1.0 / ADDR_LINE)
_TS_BIG, _TS_SCALE = 2.0**500, 2.0**-520  # see the timing features of encode_memory

# Per-row transcendentals of small integer fields, tabulated (values exactly as computed
# per row before): sin/cos of the hour (0..23) and weekday (0..6); log1p of counts 0..64.
_HOUR_SIN = np.array([math.sin(2.0 * math.pi * h / 24.0) for h in range(24)])
_HOUR_COS = np.array([math.cos(2.0 * math.pi * h / 24.0) for h in range(24)])
_DAY_SIN = np.array([math.sin(2.0 * math.pi * d / 7.0) for d in range(7)])
_DAY_COS = np.array([math.cos(2.0 * math.pi * d / 7.0) for d in range(7)])
_LOG_COUNT = np.array([math.log1p(k) / _LOG65 for k in range(65)])


# Validation is branch-free per value (``&``/``|``, no early exit), so the loops over an
# array field vectorise; the checks then name the first bad field in field order.
@numba.njit(nogil=True, cache=True, inline="always")
def _bad(x, lo, hi):
    v = np.float64(x)
    # v - v == 0: finite; implied by lo <= v <= hi when both bounds are (constants: LLVM drops it then)
    bounded = (lo > -math.inf) & (hi < math.inf)
    return not ((v >= lo) & (v <= hi) & ((v - v == 0.0) | bounded))


@numba.njit(nogil=True, cache=True, inline="always")
def _bad_arr(a, lo, hi):
    return not all_within(a, lo, hi)  # the array field in one vector test


@numba.njit(nogil=True, cache=True, inline="always")
def _encode_one(check, linear, logs_of, k, payloads, i, out):
    """Record ``i``: ``check``, then ``linear`` (features and ``k`` log1p arguments), then ``logs_of``."""
    p = payloads[i]
    err = check(p)
    if err != 0:
        return err
    logs = np.empty(k, np.float64)
    linear(p, out, logs)
    for j in range(k):
        logs[j] = log1p(logs[j])
    logs_of(logs, out)
    return 0


@numba.njit(nogil=True, cache=True)
def check_workload(p):
    """0, or the 1-based index of the first invalid field of payload record ``p``."""
    hc, hm, hg = p.historical_cpu, p.historical_memory, p.historical_gpu
    if _bad_arr(hc, _W_HCPU[1], _W_HCPU[2]):
        return _W_HCPU[0]
    # uint64 in [0, inf]: every value is valid (constants: the test compiles away)
    if (_W_HMEM[1] > 0.0 or _W_HMEM[2] < math.inf) and _bad_arr(hm, _W_HMEM[1], _W_HMEM[2]):
        return _W_HMEM[0]
    if _bad_arr(hg, _W_HGPU[1], _W_HGPU[2]):
        return _W_HGPU[0]
    if _bad(p.current_cpu, _W_CPU[1], _W_CPU[2]):
        return _W_CPU[0]
    if _bad(p.current_gpu, _W_GPU[1], _W_GPU[2]):
        return _W_GPU[0]
    if (_W_MEM[1] > 0.0 or _W_MEM[2] < math.inf) and _bad(p.current_memory, _W_MEM[1], _W_MEM[2]):
        return _W_MEM[0]
    if _bad(p.time_of_day, _W_HOUR[1], _W_HOUR[2]):
        return _W_HOUR[0]
    if _bad(p.day_of_week, _W_DAY[1], _W_DAY[2]):
        return _W_DAY[0]
    return 0


@numba.njit(nogil=True, cache=True, inline="always")
def linear_workload(p, out, args):
    """Every feature of valid ``p`` but the logarithmic ones; their log1p arguments into ``args``."""
    hc, hm, hg = p.historical_cpu, p.historical_memory, p.historical_gpu
    for j in range(10):
        out[j] = hc[j]
        out[11 + j] = hg[j]
        args[j] = np.float64(hm[j])
    args[10] = np.float64(p.current_memory)
    out[10] = p.current_cpu
    out[21] = p.current_gpu
    hour = np.int64(p.time_of_day)  # validated: 0..23 and 0..6
    day = np.int64(p.day_of_week)
    out[33] = _HOUR_SIN[hour]
    out[34] = _HOUR_COS[hour]
    out[35] = _DAY_SIN[day]
    out[36] = _DAY_COS[day]
    out[37] = 1.0 if p.day_of_week >= 5 else 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def logs_workload(logs, out):
    """The logarithmic features from ``logs`` = log1p of ``linear_workload``'s ``args``."""
    # Memory is scale-free relative to now (x10: a 10% change is ~1) plus one absolute
    # log level, so agents of 64 MB and 16 GB share what the net learns.
    lcur = logs[10]
    out[22] = lcur / MEM_LOG_SCALE
    for j in range(10):
        d = (logs[j] - lcur) * 10.0
        out[23 + j] = min(max(d, -5.0), 5.0)


@numba.njit(nogil=True, cache=True)
def encode_workload(payloads, i, out):
    return _encode_one(check_workload, linear_workload, logs_workload, W_N_LOGS, payloads, i, out)


# Threat's history sum and maximum, vectorised (models._simd): a float64 sum of float32
# values in [0, 1] that are each +0.0 or >= 2**-24 (multiples of 2**-47) is exact while
# below 2**6, so any order gives the bits of the left-to-right loop; nor can the order of a
# max matter without NaN or -0.0. Any other history (subnormal or tiny values, -0.0) takes
# the loop. (Failure's four statistics are plain loops: see failure_history_stats.)
_EXACT_SUM_TINY = 2.0**-24


@numba.njit(nogil=True, cache=True, inline="always")
def threat_history_stats_ordered(h):
    """Sum and max (from 0) of threat's historical_threats, left to right: the definition."""
    s = 0.0
    m = 0.0
    for j in range(10):
        s += h[j]
        m = max(m, np.float64(h[j]))
    return s, m


@numba.njit(nogil=True, cache=True, inline="always")
def threat_history_stats(h):
    """``threat_history_stats_ordered(h)``, bit for bit; vectorised where the sums are exact."""
    if all_zero_or_at_least(h, _EXACT_SUM_TINY):
        return field_sum(h, 0, 10, 0.0), field_max(h, 0, 10, 0.0)
    return threat_history_stats_ordered(h)


@numba.njit(nogil=True, cache=True, inline="always")
def failure_history_stats(h):
    """Of failure's historical_health, left to right: sum, sum of the last 5, sum of
    (j - 4.5) * h[10 + j] (the slope's numerator) and min (from 1). Plain loops: the vector
    reductions threat uses (one per statistic, each with its chunks' shuffles) made failure's
    row encoder slower, 10.7 against 9.4-9.6 µs per 256 records."""
    s = 0.0
    mn = 1.0
    for j in range(20):
        s += h[j]
        mn = min(mn, np.float64(h[j]))
    last5 = 0.0
    for j in range(15, 20):
        last5 += h[j]
    sxy = 0.0
    for j in range(10):
        sxy += (j - 4.5) * h[10 + j]
    return s, last5, sxy, mn


@numba.njit(nogil=True, cache=True)
def check_threat(p):
    """0, or the 1-based index of the first invalid field of payload record ``p``."""
    if _bad(p.average_latency, _T_LAT[1], _T_LAT[2]):
        return _T_LAT[0]
    if _bad(p.error_rate, _T_ERR[1], _T_ERR[2]):
        return _T_ERR[0]
    if _bad(p.resource_usage, _T_RES[1], _T_RES[2]):
        return _T_RES[0]
    if _bad(p.message_frequency, _T_MSG[1], _T_MSG[2]):
        return _T_MSG[0]
    if _bad_arr(p.historical_threats, _T_HIST[1], _T_HIST[2]):
        return _T_HIST[0]
    if _bad(p.time_since_last_threat, _T_TSL[1], _T_TSL[2]):
        return _T_TSL[0]
    cnt = np.int64(p.anomaly_count)
    if _bad(cnt, _T_CNT[1], _T_CNT[2]):
        return _T_CNT[0]
    sev = p.severity_counts
    total = 0
    for k in range(4):
        total += np.int64(sev[k])
    if _bad_arr(sev, _T_SEV[1], _T_SEV[2]) or total != cnt:
        return _T_SEV[0]
    dist = np.int64(p.distinct_anomaly_types)
    if _bad(dist, _T_DIST[1], _T_DIST[2]) or dist > cnt:
        return _T_DIST[0]
    return 0


@numba.njit(nogil=True, cache=True, inline="always")
def linear_threat(p, out, args):
    """Every feature of valid ``p`` but the logarithmic ones; their log1p arguments into ``args``."""
    h = p.historical_threats
    cnt = np.int64(p.anomaly_count)  # counts validated: 0..64
    sev = p.severity_counts
    dist = np.int64(p.distinct_anomaly_types)
    args[0] = np.float64(p.average_latency)
    args[1] = np.float64(p.message_frequency)
    args[2] = np.float64(p.time_since_last_threat)
    out[1] = p.error_rate
    out[2] = p.resource_usage
    for j in range(10):
        out[4 + j] = h[j]
    s, m = threat_history_stats(h)
    out[14] = s / 10.0
    out[15] = m
    out[16] = h[9] - h[0]
    out[18] = _LOG_COUNT[cnt]
    denom = max(cnt, 1)
    for k in range(4):
        out[19 + k] = sev[k] / denom
        out[23 + k] = _LOG_COUNT[np.int64(sev[k])]
    out[27] = dist / denom
    out[28] = _LOG_COUNT[dist]


@numba.njit(nogil=True, cache=True, inline="always")
def logs_threat(logs, out):
    """The logarithmic features from ``logs`` = log1p of ``linear_threat``'s ``args``."""
    out[0] = min(logs[0] / RATE_LOG_SCALE, 2.0)
    out[3] = min(logs[1] / RATE_LOG_SCALE, 2.0)
    out[17] = min(logs[2] / TIME_LOG_SCALE, 1.5)


@numba.njit(nogil=True, cache=True)
def encode_threat(payloads, i, out):
    return _encode_one(check_threat, linear_threat, logs_threat, T_N_LOGS, payloads, i, out)


@numba.njit(nogil=True, cache=True)
def check_failure(p):
    """0, or the 1-based index of the first invalid field of payload record ``p``."""
    if _bad(p.health_score, _F_HEALTH[1], _F_HEALTH[2]):
        return _F_HEALTH[0]
    if _bad(p.current_value, _F_CUR[1], _F_CUR[2]):
        return _F_CUR[0]
    if _bad(p.baseline, _F_BASE[1], _F_BASE[2]):
        return _F_BASE[0]
    if _bad(p.trend, _F_TREND[1], _F_TREND[2]):
        return _F_TREND[0]
    if _bad_arr(p.historical_health, _F_HIST[1], _F_HIST[2]):
        return _F_HIST[0]
    if _bad(p.time_since_last_failure, _F_TSL[1], _F_TSL[2]):
        return _F_TSL[0]
    if _bad_arr(p.failure_history, _F_FHIST[1], _F_FHIST[2]):
        return _F_FHIST[0]
    return 0


@numba.njit(nogil=True, cache=True, inline="always")
def linear_failure(p, out, args):
    """Every feature of valid ``p`` but the logarithmic one; its log1p argument into ``args``."""
    h = p.historical_health
    fh = p.failure_history
    args[0] = np.float64(p.time_since_last_failure)
    out[0] = p.health_score
    out[1] = p.trend
    for j in range(20):
        out[2 + j] = h[j]
    s, last5, sxy, mn = failure_history_stats(h)
    out[22] = last5 / 5.0
    out[23] = mn
    # Least-squares slope of the last 10 samples, per sample, x10.
    sx = 0.0
    for j in range(10):
        x = j - 4.5
        sx += x * x
    out[24] = 10.0 * sxy / sx
    out[25] = p.health_score - s / 20.0
    # Symmetric relative deviation in [-1, 1]: defined for any finite value and baseline,
    # including a zero baseline; float64 so |cur| + |base| cannot overflow.
    cur = np.float64(p.current_value)
    base = np.float64(p.baseline)
    out[26] = (cur - base) / (abs(cur) + abs(base) + 1e-9)
    for j in range(10):
        out[28 + j] = fh[j]
    ones = 0
    for j in range(10):
        ones += fh[j]  # an integer sum: the float64 sum of these 0/1 values, exactly
    out[38] = ones / 10.0


@numba.njit(nogil=True, cache=True, inline="always")
def logs_failure(logs, out):
    """The logarithmic feature from ``logs`` = log1p of ``linear_failure``'s ``args``."""
    out[27] = min(logs[0] / TIME_LOG_SCALE, 1.5)


@numba.njit(nogil=True, cache=True)
def encode_failure(payloads, i, out):
    return _encode_one(check_failure, linear_failure, logs_failure, F_N_LOGS, payloads, i, out)


@numba.njit(nogil=True, cache=True)
def log_arg_memory(d):
    """The log1p argument of signed address distance ``d``: |d| in lines."""
    return abs(d) / ADDR_LINE


@numba.njit(nogil=True, cache=True)
def enc_delta_memory(log, d):
    """Distance ``d`` on a log scale of lines (``log`` = log1p(|d| in lines)): +-1 spans the whole space."""
    v = log / _LOG_LINES
    return v if d >= 0 else -v


#: Memory's distances in lines |d| / ADDR_LINE are integers 0..2**16 for addresses on the line
#: grid (addresses are in [0, 1]: |d| <= 1). Features 0..23 of each such distance, tabulated
#: by the definition (log1p, then enc_delta_memory, rounded to float32 as the feature row
#: stores it): ``M_LINE_DELTA[k]`` is the feature of d = +k lines, -M_LINE_DELTA[k] that of
#: d = -k lines (rounding to nearest is symmetric). The row encoder looks them up.
M_LINE_MAX = 2**16


@numba.njit(nogil=True, cache=True)
def _line_delta_table(n):
    t = np.empty(n + 1, np.float32)
    for k in range(n + 1):
        t[k] = enc_delta_memory(log1p(np.float64(k)), 1.0)
    return t


M_LINE_DELTA = _line_delta_table(M_LINE_MAX)


@numba.njit(nogil=True, cache=True)
def _same(x, y):
    return abs(x - y) <= ADDR_TOL


@numba.njit(nogil=True, cache=True)
def check_memory(p):
    """0, or the 1-based index of the first invalid field of payload record ``p``."""
    if _bad_arr(p.access_history, _M_ADDR[1], _M_ADDR[2]):
        return _M_ADDR[0]
    if _bad_arr(p.access_timestamps, _M_TS[1], _M_TS[2]):
        return _M_TS[0]
    if _bad_arr(p.access_types, _M_TYPES[1], _M_TYPES[2]):
        return _M_TYPES[0]
    if _bad(p.current_address, _M_CUR[1], _M_CUR[2]):
        return _M_CUR[0]
    if _bad(p.locality_score, _M_LOC[1], _M_LOC[2]):
        return _M_LOC[0]
    return 0


#: Closeness masks of a record's addresses and strides: for lag L, the bits the period search
#: (8 .. 19 - L, lags 1..8) and the stride-repeat shares (4 - L .. 19 - L, lags 1..4) read.
_memory_masks = near_masks((3, 2, 1, 0, 8, 8, 8, 8))


@numba.njit(nogil=True, cache=True, inline="always")
def linear_memory(p, out, dists):
    """Every feature of valid ``p`` but features 0..23 and the two timing ones (64, 65).

    Features 0..23's signed address distances go to ``dists``: feature k < 24 is
    ``enc_delta_memory(log1p(log_arg_memory(dists[k])), dists[k])``. The searches over the
    address sequence a[0..20] (history then current) and its strides s[j] = a[j + 1] - a[j]
    are bit masks (``near_masks``: every comparison of a record's addresses at once), so a
    record takes no data-dependent branch.
    """
    h = p.access_history
    ty = p.access_types
    cur = np.float64(p.current_address)
    for j in range(19):
        dists[j] = np.float64(h[j + 1]) - np.float64(h[j])
    dists[19] = cur - np.float64(h[19])
    # near: bit j where a[j] is the current address; lag[L]: bit j where s[j] repeats as s[j + L].
    masks = _memory_masks(h, cur, ADDR_TOL)
    # Candidate next addresses; the network picks one (see docs/MODELS.md).
    c0 = cur + dists[19]  # last stride
    # The smallest period P whose stride pattern repeats over the last 12 strides: s[j] ~ s[j + P], 8 <= j < 20 - P.
    period = 0
    for pp in range(8, 0, -1):
        want = (1 << (20 - pp)) - (1 << 8)
        if masks[pp] & want == want:
            period = pp
    c1 = cur + dists[20 - period] if period > 0 else c0
    occ = highest_bit(masks[0])  # most recent earlier visit of the current address, -1 if none
    c2 = c0
    if occ >= 0:
        c2 = np.float64(h[occ + 1]) if occ < 19 else cur
    c3 = cur
    dists[20] = c0 - cur
    dists[21] = c1 - cur
    dists[22] = c2 - cur
    dists[23] = np.float64(h[0]) - cur
    out[24] = period / 8.0
    out[25] = 1.0 if occ >= 0 else 0.0
    out[26] = (20 - occ) / 20.0 if occ >= 0 else 0.0
    out[27] = 1.0 if _same(c0, c1) else 0.0
    out[28] = 1.0 if _same(c0, c2) else 0.0
    out[29] = 1.0 if _same(c1, c2) else 0.0
    # Shares of s[j] ~ s[j - L] and of equal types at lag L, over j in 4..19: bits 4 - L .. 19 - L.
    tmasks = equal_lag_masks(ty, 4)
    for lag in range(1, 5):
        out[29 + lag] = popcount((masks[lag] >> (4 - lag)) & 0xFFFF) / 16.0
        out[57 + lag] = popcount((tmasks[lag - 1] >> (4 - lag)) & 0xFFFF) / 16.0
    for j in range(8):
        t = ty[12 + j]
        for k in range(3):
            out[34 + 3 * j + k] = 1.0 if t == k else 0.0
    out[62] = cur
    out[63] = p.locality_score
    out[66] = c0
    out[67] = c1
    out[68] = c2
    out[69] = c3


# Timing is in the caller's unit, so only ratios of inter-arrival times are used. Any
# finite timestamp is valid: above 2**500, scale by 2**-520 (exact, ratios kept) so that
# neither the sum of 19 gaps nor a squared gap overflows to inf (inf / inf made these
# features NaN). The gaps, then their statistics in order: the row encoder runs the same
# two steps with a lane per record.
@numba.njit(nogil=True, cache=True, inline="always")
def gaps_memory(ts, gaps, stride):
    """The 19 inter-arrival gaps of timestamps ``ts`` (scaled as above) into ``gaps[j * stride]``."""
    scale = 1.0
    for j in range(20):
        if ts[j] > _TS_BIG:
            scale = _TS_SCALE
    for j in range(19):
        gaps[j * stride] = abs(ts[j + 1] * scale - ts[j] * scale)


@numba.njit(nogil=True, cache=True, inline="always")
def gap_stats_memory(gaps, n, stride, mean, var):
    """Of each of ``n`` records' 19 gaps (record r's gap j at ``gaps[j * stride + r]``): ``mean[r]``
    and ``var[r]``, the sum of squared deviations, each summed in gap order. The inner loops run
    over records, so they vectorise with a lane per record and keep every record's order."""
    for r in range(n):
        mean[r] = 0.0
    for j in range(19):
        for r in range(n):
            mean[r] += gaps[j * stride + r]
    for r in range(n):
        mean[r] /= 19.0
        var[r] = 0.0
    for j in range(19):
        for r in range(n):
            d = gaps[j * stride + r] - mean[r]
            var[r] += d * d


@numba.njit(nogil=True, cache=True, inline="always")
def timing_features_memory(last, mean, var, out):
    """Features 64 and 65 from the last gap and ``gap_stats_memory``'s: last / mean gap, coefficient of variation."""
    eps = mean * 1e-3 + 1e-30  # keeps a constant clock (mean 0) at ratio 1
    r = math.log((last + eps) / (mean + eps)) / 5.0
    out[64] = min(max(r, -1.0), 1.0)
    out[65] = min(math.sqrt(var / 19.0) / (mean + eps) / 3.0, 1.0)


@numba.njit(nogil=True, cache=True)
def encode_memory(payloads, i, out):
    p = payloads[i]
    err = check_memory(p)
    if err != 0:
        return err
    dists = np.empty(M_N_LOGS, np.float64)
    linear_memory(p, out, dists)
    gaps, stats = np.empty(19, np.float64), np.empty(2, np.float64)
    gaps_memory(p.access_timestamps, gaps, 1)
    gap_stats_memory(gaps, 1, 1, stats[:1], stats[1:])
    timing_features_memory(gaps[18], stats[0], stats[1], out)
    for k in range(M_N_LOGS):
        out[k] = enc_delta_memory(log1p(log_arg_memory(dists[k])), dists[k])
    return 0


@numba.njit(nogil=True, cache=True)
def _batch_workload(payloads, out, err):
    for i in range(payloads.shape[0]):
        err[i] = encode_workload(payloads, i, out[i])


@numba.njit(nogil=True, cache=True)
def _batch_threat(payloads, out, err):
    for i in range(payloads.shape[0]):
        err[i] = encode_threat(payloads, i, out[i])


@numba.njit(nogil=True, cache=True)
def _batch_failure(payloads, out, err):
    for i in range(payloads.shape[0]):
        err[i] = encode_failure(payloads, i, out[i])


@numba.njit(nogil=True, cache=True)
def _batch_memory(payloads, out, err):
    for i in range(payloads.shape[0]):
        err[i] = encode_memory(payloads, i, out[i])


ENCODERS = {_W: encode_workload, _T: encode_threat, _F: encode_failure, _M: encode_memory}
BATCH_ENCODERS = {_W: _batch_workload, _T: _batch_threat, _F: _batch_failure, _M: _batch_memory}
