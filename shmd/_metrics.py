"""Metrics in plain arrays: updated by the compiled loop, read by snapshots.

This module is the arrays' layout and their readers, without numba (the HTTP
shim reads them and must stay light); the compiled updaters are in
``_metrics_compiled``.

Latencies go into fixed log-linear histograms (HdrHistogram's layout): values
below ``SUB`` ns have a bucket each; above, every power of two is split into
``SUB`` equal buckets, so a bucket's width is at most 1/SUB = 0.78% of its
value and a percentile read from it is within 1% of the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUB_BITS = 7
SUB = 1 << SUB_BITS
MAX_EXP = 40  # 2**40 ns ~ 18 minutes; larger values land in the last bucket
N_BUCKETS = SUB + (MAX_EXP - SUB_BITS) * SUB

E2E, SERVICE = 0, 1  # latency kinds: caller's submit -> publish, drain -> publish
COUNT, SUM, MIN, MAX = 0, 1, 2, 3

# Per-model counters
REQUESTS, INFERENCES, CACHE_HITS, CACHE_MISSES, ERRORS, BATCHES = range(6)
N_MODEL_COUNTERS = 6
N_BATCH_BUCKETS = 16  # batch sizes 1, 2-3, 4-7, ... by power of two

# Per-channel counters; REJECTED + status is the count answered with that status.
SUBMITTED, COMPLETED, REJECTED = 0, 1, 2
N_STATUSES = 8
N_CHANNEL_COUNTERS = REJECTED + N_STATUSES

# Per-model cache counters (``CacheArrays.stats`` in ``_cache``)
HITS, MISSES, INSERTS, EVICTIONS = 0, 1, 2, 3
REFRESH_STABLE, REFRESH_DRIFT = 4, 5  # expired entries recomputed: same answer / another one (adaptive TTL)
N_CACHE_STATS = 6

# Per-model adaptive TTL settings (``CacheArrays.adapt``, float64; ADAPT_MAX_NS 0 = the TTL is fixed)
ADAPT_MIN_NS, ADAPT_MAX_NS, ADAPT_TOLERANCE = 0, 1, 2
ADAPT_WORDS = 3


def bucket_midpoints() -> np.ndarray:
    """The value each bucket stands for (its midpoint), in ns."""
    idx = np.arange(N_BUCKETS)
    mid = idx.astype(np.float64)
    high = idx >= SUB
    exp = (idx[high] - SUB) // SUB + SUB_BITS
    sub = (idx[high] - SUB) % SUB
    width = np.left_shift(1, exp - SUB_BITS).astype(np.float64)
    mid[high] = (SUB + sub) * width + width / 2
    return mid


_MIDPOINTS = bucket_midpoints()


def percentile_ms(hist_row: np.ndarray, q: float, lo: float = 0.0, hi: float = float("inf")) -> float:
    """The ``q`` quantile of one latency histogram row, in ms (0 when empty), clamped to ``[lo, hi]`` ns."""
    cum = np.cumsum(hist_row)
    if not cum.size or cum[-1] <= 0:
        return 0.0
    idx = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return min(max(float(_MIDPOINTS[idx]), lo), hi) / 1e6


@dataclass
class MetricsArrays:
    """Every counter of a daemon; rows indexed by model id / channel index."""

    model: np.ndarray  # int64[models, N_MODEL_COUNTERS]
    hist: np.ndarray  # int64[models, 2, N_BUCKETS]
    summary: np.ndarray  # int64[models, 2, 4]: count, sum, min, max (ns)
    batch_hist: np.ndarray  # int64[models, N_BATCH_BUCKETS]
    channel: np.ndarray  # int64[channels, N_CHANNEL_COUNTERS]

    @classmethod
    def new(cls, n_models: int, n_channels: int) -> MetricsArrays:
        return cls(
            model=np.zeros((n_models, N_MODEL_COUNTERS), np.int64),
            hist=np.zeros((n_models, 2, N_BUCKETS), np.int64),
            summary=np.zeros((n_models, 2, 4), np.int64),
            batch_hist=np.zeros((n_models, N_BATCH_BUCKETS), np.int64),
            channel=np.zeros((n_channels, N_CHANNEL_COUNTERS), np.int64),
        )

    def reset(self, model: int | None = None) -> None:
        """Zero the counters of one model, or of everything (channels too)."""
        if model is None:
            for arr in (self.model, self.hist, self.summary, self.batch_hist, self.channel):
                arr[...] = 0
            return
        for arr in (self.model, self.hist, self.summary, self.batch_hist):
            arr[model] = 0

    def latency(self, model: int, kind: int) -> dict[str, float]:
        """min/avg/max and p50/p95/p99 in ms for one model and latency kind."""
        s = self.summary[model, kind]
        count = int(s[COUNT])
        if count == 0:
            return {k: 0.0 for k in ("min", "avg", "max", "p50", "p95", "p99")}
        lo, hi = float(s[MIN]), float(s[MAX])

        def pct(q: float) -> float:
            return percentile_ms(self.hist[model, kind], q, lo, hi)

        return {
            "min": lo / 1e6,
            "avg": float(s[SUM]) / count / 1e6,
            "max": hi / 1e6,
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
        }
