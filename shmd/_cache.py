"""The result cache: per model, fixed capacity, four-way buckets of one cache line, TTL expiry.

Layout of one model's cache (every model has its own, indexed by model id):

- ``buckets``: ``uint64[capacity // WAYS, 2 * WAYS]``, each bucket one aligned 64-byte
  cache line: the 64-bit keys (hashes; 0 = empty way) of its WAYS entries, then their
  expiries (CLOCK_MONOTONIC ns). A lookup reads
  one line: the bucket of ``key & (buckets - 1)``. The entry in way ``w`` of bucket ``b``
  is slot ``b * WAYS + w``.
- ``values``: ``float64[capacity, N_OUTPUTS]``, each slot's answer.
- ``words``: each slot's full key, the float32 bits of the features it was computed
  from (``key_stride`` words a slot, a whole number of cache lines).

A hit needs the same 64-bit key, an entry not expired, and every feature equal to the
stored one (exact: bit for bit; quantised: equal after quantising). So two records
whose keys collide (by chance or made so by a hostile caller: the key is a fast hash,
not a secret one) never answer each other: they only share a bucket and evict each
other. There is no sweeper: an expired entry is a free way, and an insert into a full
bucket evicts the entry that expires first.

The key is a multilinear hash of the feature words (``sum(word[j] * K[j]) mod 2**64``
with fixed random odd ``K``, then murmur3's 64-bit finaliser): one multiply-add per
feature and independent across features, so it vectorises (~3 ns a row where the
former chained multiply-xorshift rounds took ~30). Keys of distinct feature vectors
collide rarely for ordinary data (the full-key compare settles those), and each
feature reaches every bit of the key (the finaliser is a bijection). Each feature is
optionally quantised to ``quantum`` first (features equal to that precision share an
entry).

The pass looks up a whole batch before its forward pass (``lookup``): a miss returns
the way its insert will take (an empty or expired way, or the live one expiring
first), which ``finish`` fills (``insert``) with no second search, unless an earlier
insert of the same pass took that way meanwhile (then it searches the bucket again).

Admission filter (per model, ``admit`` and ``doorkeeper``): while records do not repeat,
inserting every miss is pure cost (copying its full key and answer into lines no hit
will read: most of the cache's cost at 0% hits). So each window of ADMIT_WINDOW
lookups decides the next: a hit rate below 1 / ADMIT_HIT_SHARE turns the filter on,
anything above turns it off (it starts off: a cache that hits, and any short run of
traffic, caches every miss as before). While it is on, a miss is admitted (inserted)
only if its key was seen lately: the doorkeeper, DOOR_PER_ENTRY 16-bit fingerprints
per entry indexed by the key's top bits, remembers the last key of each place (TinyLFU's
doorkeeper, as a direct-mapped table that needs no clearing). A key it does not remember
is remembered, counted a miss and not looked up at all (no bucket read). So with the
filter on, a record is answered from the cache from its third sighting on, not its
second; the filter only decides what is inserted, a hit still needs the full key. The
price: traffic where every record comes exactly twice hits 0% with the filter on, 50%
without, and a caller sending distinct records turns it on for everyone; the typical
traffic of ``bench daemon`` (hit rate 0.98) never turns it on.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernel_abi import N_OUTPUTS
from models._simd import float32_from_bits

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

WAYS = 4  # entries per bucket: a bucket is one cache line, so a lookup reads one line
MAX_KEY_WORDS = 128  # features a key may have (the widest model has 70)
_LINE_WORDS = 16  # uint32 words in a 64-byte line: each slot's full key starts a line
GROW_SHIFT = 3  # a stable refresh lengthens the TTL by ttl >> 3 (x1.125); a drifting one halves it
PREFETCH_AHEAD = 8  # a lookup fetches the bucket of the row this far ahead while it handles one
RECHECK_EVERY = 64  # an adaptive model recomputes one hit in this many, to compare (costs 1/64 of its hits)

BUCKET_WORDS = 2 * WAYS  # a bucket: WAYS keys, then their expiries; 64 bytes, one cache line
NO_SLOT = np.iinfo(np.int64).max  # a miss's slot when it is not admitted: nothing is inserted

# The admission filter (see the module's docstring). Per model, words of CacheArrays.admit:
ADMIT_LOOKUPS, ADMIT_HITS = 0, 1  # lookups and hits in the window so far
ADMIT_ON = 2  # 1: the filter is on (the last window's hit rate was below 1 / ADMIT_HIT_SHARE)
ADMIT_WORDS = 3
ADMIT_WINDOW = 4096  # lookups a window (16 passes of 256): the filter is decided once a window
ADMIT_HIT_SHARE = 16  # on while fewer than 1 lookup in this many hits (6.25%)
DOOR_PER_ENTRY = 2  # doorkeeper fingerprints per cache entry (64 KiB for 16k entries: L2-resident)

_M64 = (1 << 64) - 1


def _odd_constants(n: int, seed: int) -> np.ndarray:
    """``n`` fixed pseudo-random odd 64-bit multipliers (splitmix64's sequence)."""
    out, x = [], seed
    for _ in range(n):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append((z ^ (z >> 31)) | 1)
    return np.array(out, np.uint64)


_K = _odd_constants(MAX_KEY_WORDS, 0x243F6A8885A308D3)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)


def _aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zeroed array whose first byte starts a cache line (numpy only promises 16)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


@dataclass
class CacheArrays:
    """The cache of every model, indexed by model id (row 0 unused)."""

    buckets: np.ndarray  # uint64[models, capacity // WAYS, BUCKET_WORDS]: keys, then expiries (ns)
    values: np.ndarray  # float64[models, capacity, N_OUTPUTS]
    words: np.ndarray  # uint32[...]: model m's slot s keys from words[key_at[m] + s * key_stride[m]]
    key_at: np.ndarray  # int64[models]
    key_stride: np.ndarray  # int64[models]: words a slot (a multiple of 16: whole lines)
    ttl_ns: np.ndarray  # int64[models]; 0 disables the model's cache
    quantum: np.ndarray  # float64[models]; 0 = exact features
    stats: np.ndarray  # int64[models, N_STATS]
    adapt: np.ndarray  # float64[models, ADAPT_WORDS]: adaptive TTL bounds (ns) and tolerance
    doorkeeper: np.ndarray  # uint16[models, capacity * DOOR_PER_ENTRY]: fingerprints of keys seen (admission filter)
    admit: np.ndarray  # int64[models, ADMIT_WORDS]: the admission filter's window and state
    # Per model, changed by every clear; starts at CLOCK_MONOTONIC so a restarted
    # daemon never repeats a predecessor's value. Clients' edge caches read it.
    generation: np.ndarray
    on_clear: Callable[[], None] | None = field(default=None, repr=False)  # publishes generation at once

    @classmethod
    def new(cls, n_models: int, capacity: int, key_words: Sequence[int] | None = None) -> CacheArrays:
        """Caches of ``capacity`` entries for models ``1 .. n_models - 1``.

        ``key_words[m]``: the features model ``m``'s keys have (its full key's length;
        0: the model is never cached); default MAX_KEY_WORDS for every model.
        """
        if capacity < WAYS or capacity & (capacity - 1):
            raise ValueError(f"cache capacity must be a power of two >= {WAYS}: capacity={capacity}")
        widths = [MAX_KEY_WORDS] * n_models if key_words is None else [int(w) for w in key_words]
        if len(widths) != n_models or not all(0 <= w <= MAX_KEY_WORDS for w in widths):
            raise ValueError(f"key_words: one per model, each 0..{MAX_KEY_WORDS}: key_words={widths}")
        stride = np.array([-(-w // _LINE_WORDS) * _LINE_WORDS for w in widths], np.int64)
        stride[0] = 0  # model id 0 is never served
        at = np.concatenate([[0], np.cumsum(stride * capacity)[:-1]]).astype(np.int64)
        return cls(
            buckets=_aligned((n_models, capacity // WAYS, BUCKET_WORDS), np.uint64),
            values=_aligned((n_models, capacity, N_OUTPUTS), np.float64),
            words=_aligned((max(int(stride.sum()) * capacity, _LINE_WORDS),), np.uint32),
            key_at=at,
            key_stride=stride,
            ttl_ns=np.zeros(n_models, np.int64),
            quantum=np.zeros(n_models, np.float64),
            stats=np.zeros((n_models, N_STATS), np.int64),
            adapt=np.zeros((n_models, ADAPT_WORDS), np.float64),
            doorkeeper=_aligned((n_models, capacity * DOOR_PER_ENTRY), np.uint16),
            admit=np.zeros((n_models, ADMIT_WORDS), np.int64),
            generation=np.full(n_models, time.monotonic_ns(), np.int64),
        )

    def clear(self, model: int | None = None) -> None:
        """Forget every entry (of one model, or all) and move its generation on; counters stay.

        The generation changes after the entries are gone, so an edge cache that
        loaded the new one before submitting cannot be answered from the old entries.
        """
        rows = slice(None) if model is None else model
        self.buckets[rows] = 0
        self.doorkeeper[rows] = 0
        self.admit[rows] = 0  # admits every miss again until a window says otherwise
        self.generation[rows] = max(int(self.generation.max()) + 1, time.monotonic_ns())
        if self.on_clear is not None:
            self.on_clear()

    def entries_live(self, model: int, now_ns: int) -> int:
        """Live entries of ``model`` at ``now_ns``."""
        b = self.buckets[model]
        return int(((b[:, :WAYS] != 0) & (b[:, WAYS:] > now_ns)).sum())


@intrinsic
def _prefetch_write(typingctx, ary, offset):
    """Start fetching the cache line of ``ary.flat[offset]`` (C-contiguous) for writing
    (``prefetchw``); nothing waits for it, and it never faults."""
    if not (isinstance(ary, types.Array) and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        # rw 1 (for a write), locality 3 (keep in every level), data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(ary, offset), codegen


@njit(nogil=True, cache=True, inline="always")
def _u(i):
    """An index numba need not wrap (``models._forward._u``): keeps the key's loop vectorised."""
    return np.uint64(i)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _quantised(x, quantum):
    return np.uint64(np.int64(np.floor(x / quantum + 0.5)))


@njit(nogil=True, cache=True, error_model="numpy")
def feature_keys(features, k, n, quantum, keys):
    """``keys[r]``: the 64-bit key of row ``r``'s first ``k`` (quantised) features, for ``r < n``; never 0.

    A whole batch per call, indexing ``features`` (float32[rows, width], C-contiguous)
    in place: a call per row, or a view of each row, takes and drops a reference
    (two atomic operations), which cost more than the hashing.
    """
    bits = features.view(np.uint32)
    width = np.uint64(k)
    for r in range(n):
        acc = np.uint64(0)
        if quantum > 0:
            for j in range(k):
                acc += _quantised(features[r, j], quantum) * _K[j]
        else:
            for j in range(k):  # independent multiply-adds: 4 features per instruction
                acc += np.uint64(bits[_u(r), _u(j)]) * _K[_u(j)]
        h = acc ^ width
        h ^= h >> np.uint64(33)
        h *= _FMIX1
        h ^= h >> np.uint64(33)
        h *= _FMIX2
        h ^= h >> np.uint64(33)
        keys[r] = h if h != 0 else np.uint64(1)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _same_features(words, at, features, bits, r, k, quantum):
    """Whether row ``r``'s first ``k`` features are the full key stored from ``words[at]``."""
    if quantum > 0:  # quantised keys: equal once quantised, as their hashes were computed
        for j in range(k):
            if _quantised(float32_from_bits(words[at + j]), quantum) != _quantised(features[r, j], quantum):
                return False
        return True
    for j in range(k):  # noqa: SIM110 (a loop numba compiles; all() over a generator is slower)
        if words[_u(at + j)] != bits[_u(r), _u(j)]:
            return False
    return True


@njit(nogil=True, cache=True, inline="always")
def _way_for(buckets, model, b, key, now):
    """The way of bucket ``b`` an insert of ``key`` takes at ``now`` (uint64 ns): the key's own
    entry, else a free (empty or expired) way, else the live entry that expires first."""
    own, free, oldest = -1, -1, 0
    for w in range(WAYS):
        kw = buckets[model, b, w]
        if kw == key:
            own = w
        elif free < 0 and (kw == 0 or buckets[model, b, WAYS + w] <= now):
            free = w
        if buckets[model, b, WAYS + w] < buckets[model, b, WAYS + oldest]:
            oldest = w
    return own if own >= 0 else (free if free >= 0 else oldest)


# A batch per call: a call of a compiled function takes and drops a reference to each array
# argument (two atomic operations each), and so does an inlined helper that reaches an array
# through a descriptor: per row that cost more than the lookup itself (measured). The helpers
# above take arrays the batch functions hold already.
@njit(nogil=True, cache=True, inline="always")
def _door(key, shift):
    """Where the doorkeeper remembers ``key`` (its top bits: the bucket is chosen by its low ones)
    and the fingerprint it keeps there (16 bits from the middle, never 0: an unused place)."""
    fp = np.uint16((key >> np.uint64(24)) & np.uint64(0xFFFF))
    return np.int64(key >> shift), fp if fp != 0 else np.uint16(1)


@njit(nogil=True, cache=True, error_model="numpy")
def lookup_rows(cache_, model, features, k, n, keys, now_ns, slots, seen):
    """Look up rows ``r < n`` of ``features`` whose ``keys[r]`` is not 0; count hits and misses.

    ``slots[r]``: the slot of the row's live entry (a hit, >= 0), or ``-1 - slot``, the
    slot its insert will take (NO_SLOT: none, the admission filter did not admit it);
    then ``seen[r]`` is the key that slot holds now. With an adaptive TTL one hit in
    RECHECK_EVERY is returned as a miss on its own slot (``insert_rows`` then compares
    the fresh answer with it) and counted as a miss.
    """
    buckets, words, stats, door, admit = cache_.buckets, cache_.words, cache_.stats, cache_.doorkeeper, cache_.admit
    at0, stride, quantum = cache_.key_at[model], cache_.key_stride[model], cache_.quantum[model]
    adaptive = cache_.adapt[model, ADAPT_MAX_NS] > 0
    filtering = admit[model, ADMIT_ON] != 0
    bits = features.view(np.uint32)
    now = np.uint64(now_ns)
    n_buckets = buckets.shape[1]
    mask = np.uint64(n_buckets - 1)
    shift = np.uint64(64)  # 64 - log2(doorkeeper places): the key's top bits pick its place
    while np.uint64(1) << (np.uint64(64) - shift) < door.shape[1]:
        shift -= np.uint64(1)
    looked = hits = 0
    for r in range(min(n, PREFETCH_AHEAD)):
        _prefetch_write(buckets, (model * n_buckets + np.int64(keys[r] & mask)) * BUCKET_WORDS)
    for r in range(n):
        if r + PREFETCH_AHEAD < n:  # the misses of rows ahead overlap this row's work
            ahead = keys[r + PREFETCH_AHEAD]
            at, fp = _door(ahead, shift)
            if not filtering or door[model, at] == fp:  # (a row the filter turns away reads no bucket)
                _prefetch_write(buckets, (model * n_buckets + np.int64(ahead & mask)) * BUCKET_WORDS)
        key = keys[r]
        if key == 0:
            continue
        looked += 1
        if filtering:
            at, fp = _door(key, shift)
            if door[model, at] != fp:  # not seen lately: remembered now, a miss, not admitted
                door[model, at] = fp
                stats[model, MISSES] += 1
                slots[r] = -1 - NO_SLOT
                continue
        b = np.int64(key & mask)
        hit = -1
        for w in range(WAYS):
            live = buckets[model, b, w] == key and buckets[model, b, WAYS + w] > now
            if live and _same_features(words, at0 + (b * WAYS + w) * stride, features, bits, r, k, quantum):
                hit = w
                break
        if hit >= 0 and not (adaptive and (stats[model, HITS] + stats[model, MISSES]) % RECHECK_EVERY == 0):
            stats[model, HITS] += 1
            hits += 1
            slots[r] = b * WAYS + hit
            continue
        stats[model, MISSES] += 1
        w = hit if hit >= 0 else _way_for(buckets, model, b, key, now)
        slot = b * WAYS + w
        slots[r] = -1 - slot
        seen[r] = buckets[model, b, w]
    _admission(admit, model, looked, hits)


@njit(nogil=True, cache=True)
def _admission(admit, model, looked, hits):
    """Count a batch's lookups and hits; at the end of a window, turn the admission filter on
    or off from the window's hit rate."""
    admit[model, ADMIT_LOOKUPS] += looked
    admit[model, ADMIT_HITS] += hits
    if admit[model, ADMIT_LOOKUPS] >= ADMIT_WINDOW:
        admit[model, ADMIT_ON] = admit[model, ADMIT_HITS] * ADMIT_HIT_SHARE < admit[model, ADMIT_LOOKUPS]
        admit[model, ADMIT_LOOKUPS] = 0
        admit[model, ADMIT_HITS] = 0


@njit(nogil=True, cache=True, error_model="numpy")
def insert_rows(cache_, model, features, k, n, rows, keys, slots, seen, outputs, now_ns):
    """Store ``outputs[r]``, the answer to ``features[r]``, for rows ``r < n`` whose request
    ``j = rows[r]`` has a key (``keys[j]``) and was admitted (``slots[j]`` is not NO_SLOT),
    until ``now_ns`` + the model's TTL.

    Each goes to the slot its lookup chose (``slots[j]``), holding ``seen[j]`` then; if
    that slot holds another key now (an earlier insert of this pass took it), the
    bucket is searched again. With an adaptive TTL, the entry an answer replaces (the
    same full key) first steps the TTL (``_adapt_step``).
    """
    buckets, words, values, stats = cache_.buckets, cache_.words, cache_.values, cache_.stats
    at0, stride, quantum = cache_.key_at[model], cache_.key_stride[model], cache_.quantum[model]
    adaptive = cache_.adapt[model, ADAPT_MAX_NS] > 0
    bits = features.view(np.uint32)
    now = np.uint64(now_ns)
    capacity = buckets.shape[1] * WAYS
    # The lines an insert writes (its slot's answer and full key) are fetched PREFETCH_AHEAD rows
    # ahead, so their misses overlap. Fetched by the lookup instead, a pass's 1,000 lines evicted
    # what the rest of the drain and the forward pass had in L1 (drain +10 µs per 256, measured).
    for r in range(-PREFETCH_AHEAD, n):
        ahead = slots[rows[r + PREFETCH_AHEAD]] if r + PREFETCH_AHEAD < n else NO_SLOT
        if ahead != NO_SLOT and keys[rows[r + PREFETCH_AHEAD]] != 0:
            _prefetch_write(values, (model * capacity + ahead) * N_OUTPUTS)
            for i in range(0, k, _LINE_WORDS):
                _prefetch_write(words, at0 + ahead * stride + i)
        if r < 0:
            continue
        j = rows[r]
        key = keys[j]
        if key == 0 or slots[j] == NO_SLOT:
            continue
        b = slots[j] // WAYS
        w = slots[j] % WAYS
        if buckets[model, b, w] != seen[j]:
            w = _way_for(buckets, model, b, key, now)
        slot = b * WAYS + w
        at = at0 + slot * stride
        old = buckets[model, b, w]
        if old == key and adaptive:
            if _same_features(words, at, features, bits, r, k, quantum):
                _adapt_step(cache_.ttl_ns, cache_.adapt, stats, model, values, slot, outputs, r)
        elif old != 0 and buckets[model, b, WAYS + w] > now:
            stats[model, EVICTIONS] += 1
        for i in range(k):  # unsigned indices: numba need not wrap them, so the copy vectorises
            words[_u(at + i)] = bits[_u(r), _u(i)]
        for i in range(N_OUTPUTS):
            values[model, slot, i] = outputs[r, i]
        buckets[model, b, WAYS + w] = np.uint64(now_ns + cache_.ttl_ns[model])
        buckets[model, b, w] = key
        stats[model, INSERTS] += 1


@njit(nogil=True, cache=True)
def _adapt_step(ttl_ns, adapt, stats, model, values, slot, fresh, r):
    """``fresh[r]`` is about to replace ``values[model, slot]`` (the same full key): step the model's TTL.

    Stable (every output within ``tolerance * max(1, |output|)`` of the entry):
    TTL += TTL/8, at most ADAPT_MAX_NS; drifting: TTL / 2, at least ADAPT_MIN_NS.
    """
    tol = adapt[model, ADAPT_TOLERANCE]
    stable = True
    for i in range(N_OUTPUTS):
        if abs(fresh[r, i] - values[model, slot, i]) > tol * max(1.0, abs(fresh[r, i])):
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
