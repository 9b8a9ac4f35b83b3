"""The compiled result cache and the log-linear latency histograms, in isolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmd import _cache as cache
from shmd import _metrics as met
from shmd import _metrics_compiled as met_jit
from shmd import _pass

WIDTH = 38  # features of the rows these tests cache (workload's count)


def _cache(capacity: int = 64) -> cache.CacheArrays:
    return cache.CacheArrays.new(5, capacity, [0] + [WIDTH] * 4)


def _rows(*rows: np.ndarray) -> np.ndarray:
    """A batch as the pass holds it: float32 rows wider than the model (MAX_FEATURES columns)."""
    batch = np.zeros((len(rows), 70), np.float32)
    for r, row in enumerate(rows):
        batch[r, :WIDTH] = row
    return batch


def _key(features: np.ndarray, quantum: float) -> np.uint64:
    keys = np.zeros(1, np.uint64)
    cache.feature_keys(features[None, :], len(features), 1, quantum, keys)
    return keys[0]


def _lookup(c: cache.CacheArrays, model: int, batch: np.ndarray, now: int, keys: np.ndarray | None = None):
    """(keys, slots, seen) of one batch's lookup; ``keys`` forced (collisions) or computed."""
    if keys is None:
        keys = np.zeros(len(batch), np.uint64)
        cache.feature_keys(batch, WIDTH, len(batch), c.quantum[model], keys)
    slots, seen = np.zeros(len(batch), np.int64), np.zeros(len(batch), np.uint64)
    cache.lookup_rows(_pass.cache_of(c), model, batch, WIDTH, len(batch), keys, now, slots, seen)
    return keys, slots, seen


def _get(c: cache.CacheArrays, model: int, features: np.ndarray, now: int, key: int | None = None):
    """The cached answer to one row's features, or None (a miss)."""
    _, slots, _ = _lookup(c, model, _rows(features), now, None if key is None else np.array([key], np.uint64))
    return c.values[model, slots[0]].copy() if slots[0] >= 0 else None


def _pass_of(c: cache.CacheArrays, model: int, batch: np.ndarray, now: int, outputs,
             keys: np.ndarray | None = None) -> None:  # fmt: skip
    """A pass of the daemon over ``batch``: every row looked up, then the misses' ``outputs`` inserted.

    A hit is replaced too, in its own slot (as a rechecked hit is), so a test can refresh a live entry.
    """
    keys, slots, seen = _lookup(c, model, batch, now, keys)
    for r in range(len(batch)):
        if slots[r] >= 0:
            slots[r], seen[r] = -1 - slots[r], keys[r]
    out = np.asarray(outputs, np.float64).reshape(len(batch), 4)
    cache.insert_rows(_pass.cache_of(c), model, batch, WIDTH, len(batch), np.arange(len(batch)), keys, -1 - slots,
                      seen, out, now)  # fmt: skip


def _put(c: cache.CacheArrays, model: int, features: np.ndarray, now: int, outputs, key: int | None = None) -> None:
    _pass_of(c, model, _rows(features), now, outputs, None if key is None else np.array([key], np.uint64))


def test_key_is_deterministic_and_sensitive_to_every_feature() -> None:
    x = np.linspace(0, 1, 38, dtype=np.float32)
    k = _key(x, 0.0)
    assert k == _key(x.copy(), 0.0) and k != 0
    for j in range(len(x)):
        y = x.copy()
        y[j] = np.nextafter(y[j], np.float32(2))
        assert _key(y, 0.0) != k, f"feature {j} does not reach the key"


def test_quantum_makes_nearby_features_share_a_key() -> None:
    x = np.full(10, 0.5, np.float32)
    y = x + np.float32(0.001)
    assert _key(x, 0.0) != _key(y, 0.0)
    assert _key(x, 0.01) == _key(y, 0.01)
    assert _key(x, 0.01) != _key(x + np.float32(0.02), 0.01)


def test_a_batchs_keys_are_each_rows_own_and_only_its_first_k_features_count() -> None:
    """The pass keys a model's whole batch at once, in a buffer wider than the model
    (``MAX_FEATURES`` columns): row r's key must be row r's alone, whatever lies past k."""
    rng = np.random.default_rng(7)
    batch = rng.random((6, 70), dtype=np.float32)
    keys = np.zeros(6, np.uint64)
    cache.feature_keys(batch, 38, 5, 0.0, keys)
    assert [keys[r] for r in range(5)] == [_key(batch[r, :38].copy(), 0.0) for r in range(5)]
    assert keys[5] == 0  # only the first n rows
    batch[:, 38:] = rng.random((6, 32), dtype=np.float32)  # past the model's width: no effect
    again = np.zeros(6, np.uint64)
    cache.feature_keys(batch, 38, 5, 0.0, again)
    assert list(again) == list(keys)


def test_entry_lives_for_its_ttl_then_misses() -> None:
    c = _cache()
    c.ttl_ns[2] = 500
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    _put(c, 2, x, 1_000, np.arange(4.0))
    got = _get(c, 2, x, 1_499)
    assert got is not None and list(got) == [0, 1, 2, 3]
    assert _get(c, 2, x, 1_500) is None  # expired exactly at put + ttl
    assert _get(c, 1, x, 1_200) is None  # other models' caches are separate
    assert list(c.stats[2, :4]) == [1, 2, 1, 0]  # hits, misses, inserts, evictions


def test_a_colliding_key_never_answers_another_records_features() -> None:
    """Keys are a fast hash a hostile caller can make collide: a hit needs the full key
    (every feature) equal, so a collision only costs an eviction, never a wrong answer."""
    c = _cache()
    c.ttl_ns[1] = 10**9
    a = np.linspace(0, 1, WIDTH, dtype=np.float32)
    b = a.copy()
    b[7] += np.float32(0.5)
    key = 0x1234_5678_9ABC_DEF1  # both forced under one key
    _put(c, 1, a, 0, np.full(4, 1.0), key)
    assert list(_get(c, 1, a, 1, key)) == [1.0] * 4
    assert _get(c, 1, b, 1, key) is None  # same key, other features: a miss
    _put(c, 1, b, 2, np.full(4, 2.0), key)  # takes the key's own way: a's entry goes
    assert list(_get(c, 1, b, 3, key)) == [2.0] * 4
    assert _get(c, 1, a, 3, key) is None  # a miss, never b's answer


def test_quantised_keys_compare_their_features_once_quantised() -> None:
    c = _cache()
    c.ttl_ns[3], c.quantum[3] = 10**9, 0.01
    x = np.full(WIDTH, 0.5, np.float32)
    _put(c, 3, x, 0, np.full(4, 7.0))
    assert list(_get(c, 3, x + np.float32(0.001), 1)) == [7.0] * 4  # the same once quantised: shares the entry
    assert _get(c, 3, x + np.float32(0.02), 1) is None
    far = x.copy()
    far[WIDTH - 1] += np.float32(0.02)
    key = _key(x, 0.01)
    assert _get(c, 3, far, 1, key) is None  # under x's key, one feature two quanta off: a miss


def test_misses_of_one_pass_that_chose_one_slot_are_all_kept() -> None:
    """Each lookup of a pass chooses a slot before any insert: two misses of one bucket
    choose the same way, and the second insert must find another, not overwrite the first."""
    c = _cache(64)  # 16 buckets: keys equal in their low 4 bits share one
    c.ttl_ns[1] = 10_000
    old = [np.full(WIDTH, float(i), np.float32) for i in range(cache.WAYS)]
    for i, row in enumerate(old):  # a full bucket, expiring first to last
        c.ttl_ns[1] = 10_000 + i
        _put(c, 1, row, 0, np.full(4, float(i)), 16 * (i + 1) + 5)
    c.ttl_ns[1] = 10_000
    new = [np.full(WIDTH, 10.0 + i, np.float32) for i in range(2)]
    keys = np.array([16 * 9 + 5, 16 * 10 + 5], np.uint64)
    _pass_of(c, 1, _rows(*new), 100, [[10.0] * 4, [11.0] * 4], keys)
    assert list(_get(c, 1, new[0], 200, int(keys[0]))) == [10.0] * 4
    assert list(_get(c, 1, new[1], 200, int(keys[1]))) == [11.0] * 4
    assert c.stats[1, cache.EVICTIONS] == 2 and c.entries_live(1, 200) == cache.WAYS
    assert _get(c, 1, old[0], 200, 16 + 5) is None and _get(c, 1, old[1], 200, 32 + 5) is None  # the two expiring first
    assert all(_get(c, 1, old[i], 200, 16 * (i + 1) + 5) is not None for i in (2, 3))


def test_the_same_record_twice_in_one_pass_is_cached_once() -> None:
    c = _cache(64)
    c.ttl_ns[1] = 10_000
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    _pass_of(c, 1, _rows(x, x), 0, [[1.0] * 4, [1.0] * 4])
    assert c.entries_live(1, 1) == 1 and list(_get(c, 1, x, 1)) == [1.0] * 4


def test_adaptive_ttl_lengthens_on_stable_refreshes_and_halves_on_drift() -> None:
    c = _cache()
    model = 3
    c.ttl_ns[model] = 1_000
    c.adapt[model] = (400, 1_500, 0.01)  # bounds (ns) and tolerance
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    old = np.array([0.5, 10.0, 0.0, 0.0])
    near = old + np.array([0.009, 0.09, 0, 0])  # within tolerance (relative for |x| > 1): stable
    _put(c, model, x, 0, old)  # nothing cached under the key: nothing learnt
    assert c.ttl_ns[model] == 1_000
    _put(c, model, x, 999, near)  # replacing a live entry (a rechecked hit)
    assert c.ttl_ns[model] == 1_125
    _put(c, model, x, 10_000, near)  # an expired one: it is what a hit would have answered
    assert c.ttl_ns[model] == 1_265
    for i in range(5):
        _put(c, model, x, 20_000 + i, near)
    assert c.ttl_ns[model] == 1_500  # at most the upper bound
    _put(c, model, x, 30_000, near + np.array([0.02, 0, 0, 0]))  # drifted: halved
    assert c.ttl_ns[model] == 750
    _put(c, model, x, 40_000, near + 1.0)
    assert c.ttl_ns[model] == 400  # at least the lower bound
    y = x.copy()
    y[0] += np.float32(1.0)
    _put(c, model, y, 50_000, near + 5.0, int(_key(x, 0.0)))  # another record under x's key says nothing
    assert c.ttl_ns[model] == 400
    assert (c.stats[model, met.REFRESH_STABLE], c.stats[model, met.REFRESH_DRIFT]) == (7, 2)


def test_adaptive_models_recheck_one_hit_in_so_many() -> None:
    c = _cache()
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    n = 3 * cache.RECHECK_EVERY
    for model in (1, 2):
        c.ttl_ns[model] = 10**9
        _put(c, model, x, 0, np.zeros(4))
    c.adapt[2] = (1, 10**10, 0.01)  # model 2 adaptive, model 1 fixed
    for model, rechecks in ((1, 0), (2, 3)):
        c.stats[model] = 0
        _, slots, _ = _lookup(c, model, _rows(*[x] * n), 1)
        hit_slot = slots.max()
        assert hit_slot >= 0 and (slots < 0).sum() == rechecks
        assert all(-1 - s == hit_slot for s in slots[slots < 0])  # a recheck refreshes the entry it hit
        assert (c.stats[model, cache.HITS], c.stats[model, cache.MISSES]) == (n - rechecks, rechecks)


def test_clear_forgets_one_model_or_all() -> None:
    c = _cache()
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)
    for model in (1, 2):
        c.ttl_ns[model] = 100
        _put(c, model, x, 0, np.zeros(4))
    c.clear(1)
    assert _get(c, 1, x, 1) is None and _get(c, 2, x, 1) is not None
    c.clear()
    assert _get(c, 2, x, 1) is None


def test_capacity_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match=r"^cache capacity must be a power of two >= 4: capacity=100$"):
        cache.CacheArrays.new(5, 100)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**40 - 1))
def test_histogram_bucket_is_within_one_percent(value: int) -> None:
    mid = met.bucket_midpoints()[met_jit.bucket_of(value)]
    assert abs(mid - value) <= max(0.01 * value, 0.5)


def test_percentiles_and_summary_from_recorded_latencies() -> None:
    m = met.MetricsArrays.new(5, 1)
    rng = np.random.default_rng(3)
    values = rng.integers(1_000, 5_000_000, 10_000)
    for v in values:
        met_jit.record_latency(m.hist, m.summary, 3, met.E2E, int(v))
    lat = m.latency(3, met.E2E)
    assert lat["min"] == values.min() / 1e6 and lat["max"] == values.max() / 1e6
    assert lat["avg"] == pytest.approx(values.mean() / 1e6)
    for q in (50, 95, 99):
        assert lat[f"p{q}"] == pytest.approx(np.percentile(values, q) / 1e6, rel=0.015)
    m.reset(3)
    assert m.latency(3, met.E2E)["p50"] == 0.0


def test_batch_histogram_buckets_by_power_of_two() -> None:
    m = met.MetricsArrays.new(5, 1)
    for size in (1, 2, 3, 4, 255, 256, 100_000):
        met_jit.record_batch(m.batch_hist, 1, size)
    assert list(m.batch_hist[1, :10]) == [1, 2, 1, 0, 0, 0, 0, 1, 1, 0]
    assert m.batch_hist[1, met.N_BATCH_BUCKETS - 1] == 1


def test_buckets_are_cache_lines_and_each_full_key_starts_one() -> None:
    c = _cache(64)
    assert cache.BUCKET_WORDS * c.buckets.itemsize == 64 and c.buckets.ctypes.data % 64 == 0
    assert c.words.ctypes.data % 64 == 0 and list(c.key_stride) == [0, 48, 48, 48, 48]  # 38 features: 3 lines
    assert list(c.key_at[1:]) == [0, 64 * 48, 2 * 64 * 48, 3 * 64 * 48]
