"""The compiled updaters of the metrics arrays (layout and readers: ``_metrics``)."""

from __future__ import annotations

from numba import njit

from ._metrics import COUNT, MAX, MIN, N_BATCH_BUCKETS, N_BUCKETS, SUB, SUB_BITS, SUM


@njit(nogil=True, cache=True)
def bit_length(v):
    n = 0
    while v >= 256:
        v >>= 8
        n += 8
    while v > 0:
        v >>= 1
        n += 1
    return n


@njit(nogil=True, cache=True)
def bucket_of(value):
    """Histogram bucket of a non-negative ns value."""
    if value < SUB:
        return max(value, 0)
    exp = bit_length(value) - 1
    idx = SUB + (exp - SUB_BITS) * SUB + ((value >> (exp - SUB_BITS)) & (SUB - 1))
    return min(idx, N_BUCKETS - 1)


@njit(nogil=True, cache=True)
def record_latency(hist, summary, model, kind, value):
    hist[model, kind, bucket_of(value)] += 1
    s = summary[model, kind]
    if s[COUNT] == 0 or value < s[MIN]:
        s[MIN] = value
    if value > s[MAX]:
        s[MAX] = value
    s[COUNT] += 1
    s[SUM] += value


@njit(nogil=True, cache=True)
def record_batch(batch_hist, model, size):
    batch_hist[model, min(bit_length(size) - 1, N_BATCH_BUCKETS - 1)] += 1
