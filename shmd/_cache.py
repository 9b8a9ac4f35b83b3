"""The result cache: per model, fixed capacity, open addressing, TTL expiry.

All state is in plain arrays so the compiled poll loop probes and fills it
directly; there is no sweeper: a probe treats an expired entry as empty, and
an insert into a full probe window evicts the entry that expires first.

Keys are a 64-bit hash of the encoded feature vector, each feature optionally
quantised to ``quantum`` first (so features equal to that precision share an
entry). Key 0 marks an empty entry.

Adaptive TTL (``adapt_ttl``, per model, off unless configured): whenever a
fresh answer is about to replace the entry of its key (an expired entry, one
filled earlier in the same pass, or a live one that ``recheck_hit`` turned
into a miss: one hit in RECHECK_EVERY, so drift is seen even while entries
live long), it is compared with the entry first: what a hit would have
answered. Equal within the model's tolerance (stable data) lengthens the TTL
by 1/8; different (drifting) halves it; both within the configured bounds.
The TTL lives in the stats segment (``cache_ttl_ns``), so readers see it at
once; the daemon republishes it in every channel header for the clients' edge
caches each housekeeping (``Daemon.publish_cache``). With exact keys the same features
always give the same answer, so only a quantised cache (``quantum`` > 0) or
a changed model ever sees drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from kernel_abi import N_OUTPUTS

# Per-model counters in CacheArrays.stats, defined with the other metrics (readers import them without numba)
from ._metrics import (
    ADAPT_MAX_NS,
    ADAPT_MIN_NS,
    ADAPT_TOLERANCE,
    ADAPT_WORDS,
    EVICTIONS,
    HITS,
    INSERTS,
    MISSES,
    REFRESH_DRIFT,
    REFRESH_STABLE,
)
from ._metrics import N_CACHE_STATS as N_STATS

PROBE = 4  # entries (cache lines) examined per lookup: bounds the cost of a miss

_SEED = np.uint64(0x243F6A8885A308D3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
GROW_SHIFT = 3  # a stable refresh lengthens the TTL by ttl >> 3 (x1.125); a drifting one halves it
RECHECK_EVERY = 64  # an adaptive model recomputes one hit in this many, to compare (costs 1/64 of its hits)


#: One entry fills one 64-byte cache line, so a probe costs one line fetched.
ENTRY = np.dtype(
    [("key", "<u8"), ("expiry", "<i8"), ("values", "<f8", (N_OUTPUTS,)), ("pad", "<u8", (2,))], align=True
)


def _aligned_entries(n_models: int, capacity: int) -> np.ndarray:
    """Zeroed entries whose first byte starts a cache line (numpy only promises 16)."""
    size = n_models * capacity * ENTRY.itemsize
    raw = np.zeros(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(ENTRY).reshape(n_models, capacity)


@dataclass
class CacheArrays:
    """The cache of every model, indexed by model id (row 0 unused)."""

    entries: np.ndarray  # ENTRY[models, capacity]; expiry in CLOCK_MONOTONIC ns
    ttl_ns: np.ndarray  # int64[models]; 0 disables the model's cache
    quantum: np.ndarray  # float64[models]; 0 = exact features
    stats: np.ndarray  # int64[models, N_STATS]
    adapt: np.ndarray  # float64[models, ADAPT_WORDS]: adaptive TTL bounds (ns) and tolerance
    # Per model, changed by every clear; starts at CLOCK_MONOTONIC so a restarted
    # daemon never repeats a predecessor's value. Clients' edge caches read it.
    generation: np.ndarray
    on_clear: Callable[[], None] | None = field(default=None, repr=False)  # publishes generation at once

    @classmethod
    def new(cls, n_models: int, capacity: int) -> CacheArrays:
        if capacity < PROBE or capacity & (capacity - 1):
            raise ValueError(f"cache capacity must be a power of two >= {PROBE}: capacity={capacity}")
        return cls(
            entries=_aligned_entries(n_models, capacity),
            ttl_ns=np.zeros(n_models, np.int64),
            quantum=np.zeros(n_models, np.float64),
            stats=np.zeros((n_models, N_STATS), np.int64),
            adapt=np.zeros((n_models, ADAPT_WORDS), np.float64),
            generation=np.full(n_models, time.monotonic_ns(), np.int64),
        )

    def clear(self, model: int | None = None) -> None:
        """Forget every entry (of one model, or all) and move its generation on; counters stay.

        The generation changes after the entries are gone, so an edge cache that
        loaded the new one before submitting cannot be answered from the old entries.
        """
        rows = slice(None) if model is None else model
        self.entries["key"][rows] = 0
        self.entries["expiry"][rows] = 0
        self.generation[rows] = max(int(self.generation.max()) + 1, time.monotonic_ns())
        if self.on_clear is not None:
            self.on_clear()

    def entries_live(self, model: int, now_ns: int) -> int:
        """Live entries of ``model`` at ``now_ns``."""
        e = self.entries[model]
        return int(((e["key"] != 0) & (e["expiry"] > now_ns)).sum())


@njit(nogil=True, cache=True, inline="always")
def _round(h, word):
    h = (h ^ word) * _GOLDEN
    return h ^ (h >> np.uint64(32))


@njit(nogil=True, cache=True, inline="always")
def _word(features, bits, r, j, quantum):
    if quantum > 0:
        return np.uint64(np.int64(np.floor(features[r, j] / quantum + 0.5)))
    return np.uint64(bits[r, j])  # exact mode hashes the float32 bit patterns


@njit(nogil=True, cache=True)
def feature_keys(features, k, n, quantum, keys):
    """``keys[r]``: a 64-bit key of row ``r``'s first ``k`` (quantised) features, for ``r < n``; never 0.

    One multiply-xorshift round per feature, in four independent lanes (the
    multiplies of one lane wait for each other; four lanes keep the CPU busy),
    then splitmix64's avalanche: cheap enough for every request, and mixing
    well enough that two feature vectors sharing a key (which would answer
    one with the other's prediction) is a ~2**-64 event per lookup.

    A whole batch per call, indexing ``features`` (float32[rows, width], C-contiguous)
    in place: a call per row, or a view of each row, takes and drops a reference
    (two atomic operations), which cost more than the hashing (~35 ns a row).
    """
    bits = features.view(np.uint32)
    for r in range(n):
        h0, h1, h2, h3 = _SEED, _SEED ^ np.uint64(1), _SEED ^ np.uint64(2), _SEED ^ np.uint64(3)
        j = 0
        while j + 4 <= k:
            h0 = _round(h0, _word(features, bits, r, j, quantum))
            h1 = _round(h1, _word(features, bits, r, j + 1, quantum))
            h2 = _round(h2, _word(features, bits, r, j + 2, quantum))
            h3 = _round(h3, _word(features, bits, r, j + 3, quantum))
            j += 4
        while j < k:
            h0 = _round(h0, _word(features, bits, r, j, quantum))
            j += 1
        h = _round(_round(_round(h0, h1), h2), h3) ^ np.uint64(k)
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
        keys[r] = h if h != 0 else np.uint64(1)


# The per-row functions below are inlined into the pass: a call of a compiled function takes and
# drops a reference to each array argument (two atomic operations each), which cost more per
# row than the probe itself.
@njit(nogil=True, cache=True, inline="always")
def cache_get(entries, stats, model, key, now_ns, out):
    """Copy a live entry for ``key`` into ``out``; True on a hit."""
    mask = entries.shape[1] - 1
    start = np.int64(key & np.uint64(mask))
    for p in range(PROBE):
        e = entries[model, (start + p) & mask]
        if e.key == key and e.expiry > now_ns:
            out[:] = e.values
            stats[model, HITS] += 1
            return True
    stats[model, MISSES] += 1
    return False


@njit(nogil=True, cache=True, inline="always")
def cache_put(entries, stats, model, key, now_ns, ttl_ns, outputs):
    """Store ``outputs`` under ``key`` until ``now_ns + ttl_ns``."""
    mask = entries.shape[1] - 1
    start = np.int64(key & np.uint64(mask))
    victim = start
    for p in range(PROBE):
        i = (start + p) & mask
        e = entries[model, i]
        if e.key == key or e.key == 0 or e.expiry <= now_ns:
            victim = i
            break
        if e.expiry < entries[model, victim].expiry:
            victim = i
    else:
        stats[model, EVICTIONS] += 1
    e = entries[model, victim]
    e.key = key
    e.expiry = now_ns + ttl_ns
    e.values[:] = outputs
    stats[model, INSERTS] += 1


@njit(nogil=True, cache=True, inline="always")
def recheck_hit(stats, adapt, model):
    """Whether this hit of ``model`` is recomputed instead (adaptive TTL only); counted as a miss then."""
    if adapt[model, ADAPT_MAX_NS] == 0 or (stats[model, HITS] + stats[model, MISSES]) % RECHECK_EVERY != 0:
        return False
    stats[model, HITS] -= 1
    stats[model, MISSES] += 1
    return True


@njit(nogil=True, cache=True)
def adapt_ttl(entries, ttl_ns, adapt, stats, model, key, now_ns, fresh):
    """Before ``fresh`` replaces ``key``'s entry, compare it with the entry and step the model's TTL.

    Stable (every output within ``tolerance * max(1, |output|)`` of the entry):
    TTL += TTL/8, at most ADAPT_MAX_NS; drifting: TTL / 2, at least ADAPT_MIN_NS.
    A key not cached says nothing.
    """
    mask = entries.shape[1] - 1
    start = np.int64(key & np.uint64(mask))
    for p in range(PROBE):
        e = entries[model, (start + p) & mask]
        if e.key != key:
            continue
        tol = adapt[model, ADAPT_TOLERANCE]
        stable = True
        for k in range(fresh.shape[0]):
            if abs(fresh[k] - e.values[k]) > tol * max(1.0, abs(fresh[k])):
                stable = False
                break
        ttl = ttl_ns[model]
        if stable:
            ttl = min(ttl + (ttl >> GROW_SHIFT), np.int64(adapt[model, ADAPT_MAX_NS]))
            stats[model, REFRESH_STABLE] += 1
        else:
            ttl = max(ttl >> 1, np.int64(adapt[model, ADAPT_MIN_NS]))
            stats[model, REFRESH_DRIFT] += 1
        ttl_ns[model] = ttl
        return
