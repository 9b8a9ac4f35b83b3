"""The result cache: per model, fixed capacity, open addressing, TTL expiry.

All state is in plain arrays so the compiled poll loop probes and fills it
directly; there is no sweeper: a probe treats an expired entry as empty, and
an insert into a full probe window evicts the entry that expires first.

Keys are a 64-bit hash of the encoded feature vector, each feature optionally
quantised to ``quantum`` first (so features equal to that precision share an
entry). Key 0 marks an empty entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from kernel_abi import N_OUTPUTS

PROBE = 8  # entries examined per lookup: bounds the worst case, keeps hits on one or two cache lines

# Per-model counters in CacheArrays.stats
HITS, MISSES, INSERTS, EVICTIONS = 0, 1, 2, 3
N_STATS = 4

_SEED = np.uint64(0x243F6A8885A308D3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass
class CacheArrays:
    """The cache of every model, indexed by model id (row 0 unused)."""

    keys: np.ndarray  # uint64[models, capacity]
    expiry: np.ndarray  # int64[models, capacity], CLOCK_MONOTONIC ns
    values: np.ndarray  # float64[models, capacity, N_OUTPUTS]
    ttl_ns: np.ndarray  # int64[models]; 0 disables the model's cache
    quantum: np.ndarray  # float64[models]; 0 = exact features
    stats: np.ndarray  # int64[models, N_STATS]

    @classmethod
    def new(cls, n_models: int, capacity: int) -> CacheArrays:
        if capacity < PROBE or capacity & (capacity - 1):
            raise ValueError(f"cache capacity must be a power of two >= {PROBE}: capacity={capacity}")
        return cls(
            keys=np.zeros((n_models, capacity), np.uint64),
            expiry=np.zeros((n_models, capacity), np.int64),
            values=np.zeros((n_models, capacity, N_OUTPUTS), np.float64),
            ttl_ns=np.zeros(n_models, np.int64),
            quantum=np.zeros(n_models, np.float64),
            stats=np.zeros((n_models, N_STATS), np.int64),
        )

    def clear(self, model: int | None = None) -> None:
        """Forget every entry (of one model, or all); counters stay."""
        rows = slice(None) if model is None else model
        self.keys[rows] = 0
        self.expiry[rows] = 0

    def entries(self, model: int, now_ns: int) -> int:
        """Live entries of ``model`` at ``now_ns``."""
        return int(((self.keys[model] != 0) & (self.expiry[model] > now_ns)).sum())


@njit(nogil=True, cache=True)
def feature_key(features, quantum):
    """A 64-bit key of the (quantised) features; never 0.

    One multiply-xorshift round per feature and a final avalanche
    (splitmix64's): cheap enough to run on every request, and mixing well
    enough that two feature vectors sharing a key (which would answer one
    with the other's prediction) is a ~2**-64 event per lookup.
    """
    h = _SEED
    bits = features.view(np.uint32)  # exact mode hashes the float32 bit patterns
    for j in range(features.shape[0]):
        if quantum > 0:
            word = np.uint64(np.int64(np.floor(features[j] / quantum + 0.5)))
        else:
            word = np.uint64(bits[j])
        h = (h ^ word) * _GOLDEN
        h ^= h >> np.uint64(32)
    h ^= h >> np.uint64(30)
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    h ^= h >> np.uint64(31)
    return h if h != 0 else np.uint64(1)


@njit(nogil=True, cache=True)
def cache_get(keys, expiry, values, stats, model, key, now_ns, out):
    """Copy a live entry for ``key`` into ``out``; True on a hit."""
    capacity = keys.shape[1]
    mask = capacity - 1
    start = np.int64(key & np.uint64(mask))
    for p in range(PROBE):
        i = (start + p) & mask
        if keys[model, i] == key and expiry[model, i] > now_ns:
            out[:] = values[model, i, :]
            stats[model, HITS] += 1
            return True
    stats[model, MISSES] += 1
    return False


@njit(nogil=True, cache=True)
def cache_put(keys, expiry, values, stats, model, key, now_ns, ttl_ns, outputs):
    """Store ``outputs`` under ``key`` until ``now_ns + ttl_ns``."""
    capacity = keys.shape[1]
    mask = capacity - 1
    start = np.int64(key & np.uint64(mask))
    victim = start
    for p in range(PROBE):
        i = (start + p) & mask
        if keys[model, i] == key or keys[model, i] == 0 or expiry[model, i] <= now_ns:
            victim = i
            break
        if expiry[model, i] < expiry[model, victim]:
            victim = i
    else:
        stats[model, EVICTIONS] += 1
    keys[model, victim] = key
    expiry[model, victim] = now_ns + ttl_ns
    values[model, victim, :] = outputs
    stats[model, INSERTS] += 1
