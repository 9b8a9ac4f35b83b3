"""The compiled result cache and the log-linear latency histograms, in isolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmd import _cache as cache
from shmd import _metrics as met
from shmd import _metrics_compiled as met_jit


def _cache(capacity: int = 64) -> cache.CacheArrays:
    return cache.CacheArrays.new(5, capacity)


def _get(c: cache.CacheArrays, model: int, key: np.uint64, now: int) -> np.ndarray | None:
    out = np.zeros(4)
    return out if cache.cache_get(c.entries, c.stats, model, key, now, out) else None


def _key(features: np.ndarray, quantum: float) -> np.uint64:
    keys = np.zeros(1, np.uint64)
    cache.feature_keys(features[None, :], len(features), 1, quantum, keys)
    return keys[0]


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
    key = np.uint64(12345)
    cache.cache_put(c.entries, c.stats, 2, key, 1_000, 500, np.arange(4.0))
    got = _get(c, 2, key, 1_499)
    assert got is not None and list(got) == [0, 1, 2, 3]
    assert _get(c, 2, key, 1_500) is None  # expired exactly at put + ttl
    assert _get(c, 1, key, 1_200) is None  # other models' caches are separate
    assert list(c.stats[2, :4]) == [1, 1, 1, 0]  # hits, misses, inserts, evictions


def test_adaptive_ttl_lengthens_on_stable_refreshes_and_halves_on_drift() -> None:
    c = _cache()
    model, key = 3, np.uint64(99)
    c.ttl_ns[model] = 1_000
    c.adapt[model] = (400, 1_500, 0.01)  # bounds (ns) and tolerance
    step = lambda now, fresh: cache.adapt_ttl(c.entries, c.ttl_ns, c.adapt, c.stats, model, key, now, fresh)  # noqa: E731
    old = np.array([0.5, 10.0, 0.0, 0.0])
    step(0, old)  # nothing cached under the key: nothing learnt
    assert c.ttl_ns[model] == 1_000
    cache.cache_put(c.entries, c.stats, model, key, 0, 1_000, old)
    step(999, old + np.array([0.009, 0.09, 0, 0]))  # within tolerance (relative for |x| > 1): stable
    assert c.ttl_ns[model] == 1_125
    c.ttl_ns[model] = 1_000
    step(1_000, old + np.array([0.009, 0.09, 0, 0]))  # expired or live, the entry is what a hit would answer
    assert c.ttl_ns[model] == 1_125
    step(1_000, old)
    assert c.ttl_ns[model] == 1_265
    for _ in range(5):
        step(1_000, old)
    assert c.ttl_ns[model] == 1_500  # at most the upper bound
    step(1_000, old + np.array([0.02, 0, 0, 0]))  # drifted: halved
    assert c.ttl_ns[model] == 750
    step(1_000, old + 1.0)
    assert c.ttl_ns[model] == 400  # at least the lower bound
    assert (c.stats[model, met.REFRESH_STABLE], c.stats[model, met.REFRESH_DRIFT]) == (8, 2)


def test_adaptive_models_recheck_one_hit_in_so_many() -> None:
    c = _cache()
    rechecked = []
    for model in (1, 2):
        c.adapt[2] = (1, 2, 0.01)  # model 2 adaptive, model 1 fixed
        for _ in range(3 * cache.RECHECK_EVERY):
            c.stats[model, cache.HITS] += 1  # what cache_get counts on a hit
            rechecked.append(cache.recheck_hit(c.stats, c.adapt, model))
    n = 3 * cache.RECHECK_EVERY
    assert sum(rechecked[:n]) == 0 and sum(rechecked[n:]) == 3
    assert c.stats[2, cache.HITS] + c.stats[2, cache.MISSES] == n and c.stats[2, cache.MISSES] == 3


def test_full_probe_window_evicts_the_entry_expiring_first() -> None:
    c = _cache(64)
    keys = [np.uint64(7 + 64 * i) for i in range(cache.PROBE + 1)]  # all land in one window
    for i, key in enumerate(keys[:-1]):
        cache.cache_put(c.entries, c.stats, 1, key, 0, 1_000 + i, np.full(4, float(i)))
    cache.cache_put(c.entries, c.stats, 1, keys[-1], 0, 5_000, np.full(4, 99.0))
    assert c.stats[1, cache.EVICTIONS] == 1
    assert _get(c, 1, keys[0], 10) is None  # the one expiring first went
    assert all(_get(c, 1, key, 10) is not None for key in keys[1:])
    assert c.entries_live(1, 10) == cache.PROBE


def test_clear_forgets_one_model_or_all() -> None:
    c = _cache()
    for model in (1, 2):
        cache.cache_put(c.entries, c.stats, model, np.uint64(5), 0, 100, np.zeros(4))
    c.clear(1)
    assert _get(c, 1, np.uint64(5), 1) is None and _get(c, 2, np.uint64(5), 1) is not None
    c.clear()
    assert _get(c, 2, np.uint64(5), 1) is None


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


def test_entries_are_cache_line_sized_and_aligned() -> None:
    c = _cache(64)
    assert cache.ENTRY.itemsize == 64
    assert c.entries.ctypes.data % 64 == 0
