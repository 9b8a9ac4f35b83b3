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


# Inlined into the pass, which stamps every record: a call of a compiled function takes and drops
# a reference to each array argument (two atomic operations each), dearer than the update itself.
@njit(nogil=True, cache=True, inline="always")
def record_latency(hist, summary, model, kind, value):
    hist[model, kind, bucket_of(value)] += 1
    # Indexed in full rather than through a row view, which would take a reference (atomic) per call.
    if summary[model, kind, COUNT] == 0 or value < summary[model, kind, MIN]:
        summary[model, kind, MIN] = value
    if value > summary[model, kind, MAX]:
        summary[model, kind, MAX] = value
    summary[model, kind, COUNT] += 1
    summary[model, kind, SUM] += value


@njit(nogil=True, cache=True, inline="always")
def record_batch(batch_hist, model, size):
    batch_hist[model, min(bit_length(size) - 1, N_BATCH_BUCKETS - 1)] += 1
