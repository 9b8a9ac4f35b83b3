"""The cache's admission filter: traffic that never repeats stops paying for inserts, traffic that
repeats is cached as before. Pure functions on private arrays: no daemon, no clock, no threads."""

from __future__ import annotations

import numpy as np

from shmd import _cache as cache
from shmd._metrics import HITS, INSERTS, MISSES

from .test_cache_metrics import WIDTH, _cache, _get, _lookup, _pass_of, _rows

MODEL = 1
NOW = 1_000_000
ANSWER = [1.0, 2.0, 3.0, 4.0]


def _distinct(first: int, n: int) -> np.ndarray:
    """``n`` rows no other call of this module makes: feature 0 is the row's own number."""
    batch = np.zeros((n, 70), np.float32)
    batch[:, :WIDTH] = 0.25
    batch[:, 0] = np.arange(first, first + n, dtype=np.float32)
    return batch


def _window_of_misses(c: cache.CacheArrays, first: int = 1) -> None:
    """A whole window of lookups that never hit (inserted, as the daemon would)."""
    for start in range(first, first + cache.ADMIT_WINDOW, 256):
        _pass_of(c, MODEL, _distinct(start, 256), NOW, np.zeros((256, 4)))


def _filtering_cache() -> cache.CacheArrays:
    c = _cache(capacity=1024)
    c.ttl_ns[MODEL] = 10**12
    _window_of_misses(c)
    assert c.admit[MODEL, cache.ADMIT_ON] == 1, "a window without hits turns the filter on"
    return c


def test_the_filter_starts_off_so_a_second_sighting_hits() -> None:
    c = _cache(capacity=1024)
    c.ttl_ns[MODEL] = 10**12
    x = _distinct(10**6, 1)[0, :WIDTH]
    _pass_of(c, MODEL, _rows(x), NOW, [ANSWER])
    assert list(_get(c, MODEL, x, NOW)) == ANSWER
    assert c.admit[MODEL, cache.ADMIT_ON] == 0


def test_with_the_filter_on_a_record_is_inserted_on_its_second_sighting_and_hits_on_its_third() -> None:
    c = _filtering_cache()
    x = _distinct(10**6, 1)[0, :WIDTH]
    stats, buckets = c.stats[MODEL].copy(), c.buckets[MODEL].copy()
    _pass_of(c, MODEL, _rows(x), NOW, [ANSWER])  # first sighting: a miss, remembered, not inserted
    assert c.stats[MODEL, MISSES] == stats[MISSES] + 1 and c.stats[MODEL, INSERTS] == stats[INSERTS]
    assert (c.buckets[MODEL] == buckets).all()
    _pass_of(c, MODEL, _rows(x), NOW, [ANSWER])  # second: a miss, admitted
    assert c.stats[MODEL, MISSES] == stats[MISSES] + 2 and c.stats[MODEL, INSERTS] == stats[INSERTS] + 1
    assert list(_get(c, MODEL, x, NOW)) == ANSWER  # third: a hit
    assert c.stats[MODEL, HITS] == stats[HITS] + 1


def test_a_row_the_filter_turns_away_reads_no_bucket_and_takes_no_slot() -> None:
    c = _filtering_cache()
    keys, slots, _ = _lookup(c, MODEL, _distinct(2 * 10**6, 4), NOW)
    assert all(k != 0 for k in keys) and list(slots) == [-1 - cache.NO_SLOT] * 4


def test_a_doorkeeper_match_admits_but_never_answers() -> None:
    """The doorkeeper keeps 16 bits of a key: a record whose key matches another's there is
    admitted, looked up and inserted as a miss; only the full key makes a hit."""
    c = _filtering_cache()
    a, b = _distinct(3 * 10**6, 2)[:, :WIDTH]
    key = np.array([0x0123456789ABCDEF], np.uint64)  # both forced onto one key: bucket and doorkeeper place
    _pass_of(c, MODEL, _rows(a), NOW, [ANSWER], keys=key.copy())  # remembered, not inserted
    assert _get(c, MODEL, b, NOW, key=int(key[0])) is None  # admitted (the key was seen): a miss, no hit
    _pass_of(c, MODEL, _rows(b), NOW, [[9.0, 9.0, 9.0, 9.0]], keys=key.copy())
    assert list(_get(c, MODEL, b, NOW, key=int(key[0]))) == [9.0] * 4
    assert _get(c, MODEL, a, NOW, key=int(key[0])) is None  # b's entry never answers a


def test_the_filter_turns_off_once_records_repeat() -> None:
    c = _filtering_cache()
    batch = _distinct(4 * 10**6, 256)
    for _ in range(cache.ADMIT_WINDOW // 256 + 1):  # each row comes 17 times: from its third on it hits
        _pass_of(c, MODEL, batch, NOW, np.zeros((256, 4)))
    assert c.admit[MODEL, cache.ADMIT_ON] == 0
    x = _distinct(5 * 10**6, 1)[0, :WIDTH]
    _pass_of(c, MODEL, _rows(x), NOW, [ANSWER])
    assert list(_get(c, MODEL, x, NOW)) == ANSWER  # cached on its first sighting again


def test_clear_turns_the_filter_off() -> None:
    c = _filtering_cache()
    c.clear(MODEL)
    assert c.admit[MODEL, cache.ADMIT_ON] == 0 and not c.doorkeeper[MODEL].any()
    x = _distinct(6 * 10**6, 1)[0, :WIDTH]
    _pass_of(c, MODEL, _rows(x), NOW, [ANSWER])
    assert list(_get(c, MODEL, x, NOW)) == ANSWER
