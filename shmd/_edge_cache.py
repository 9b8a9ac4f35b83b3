"""The Python client's edge cache: recent answers of the daemon, served without a round trip.

An exact-match cache in the client process (kernel_abi/_rendezvous.py, "Edge
caches", states the protocol the C client follows too):

- The key is the model and the exact bytes of the request's API fields as
  ``marshal`` writes them (binary floats, types kept: ``1``, ``1.0`` and
  ``True`` differ). The payload is a deterministic function of those fields,
  so equal keys mean equal payloads, and the key costs ~2 µs where encoding
  and validating the payload costs 30-80 µs on this host. Fields ``marshal``
  cannot write (numpy values, custom mappings) are simply not cached.
- Lifetime and invalidation come from the daemon, in the channel header it
  writes: ``cache_ttl_ns[model]`` (0: the daemon does not cache this model,
  so neither does the client) and ``cache_generation[model]``, which the
  daemon changes after clearing the model's cache or swapping it. Both are
  loaded before the request is submitted; the entry is served only until
  ``submit + ttl`` and while the generation is still the one loaded then.
- Only fresh answers (not the daemon's own cache hits, whose age is unknown)
  are kept, so a local answer is never older than the daemon's TTL.
- Bounded: at most ``capacity`` entries; the oldest insert goes first.

The daemon never sees a local hit: its metrics count only requests that reach
it; the client counts its own (``hits``, ``misses``).
"""

from __future__ import annotations

import marshal
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Key = tuple[int, bytes]  # model id, marshal bytes of the fields
Stamp = tuple[int, int, int]  # generation, ttl_ns, submit ns

_MARSHAL_VERSION = 2  # no back-references (version 3+): the same value always gives the same bytes


class EdgeCache:
    """Answers keyed by (model, fields), valid while the daemon's generation and TTL allow."""

    def __init__(self, header: np.void, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"edge cache capacity must be >= 1: capacity={capacity}")
        self.capacity = capacity
        # Views of the daemon's words in the channel header; a memoryview reads them as Python ints.
        self._ttl = memoryview(header["cache_ttl_ns"])
        self._generation = memoryview(header["cache_generation"])
        self._entries: dict[Key, tuple[int, int, dict[str, Any]]] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, mid: int, fields: Mapping[str, Any]) -> tuple[Key | None, dict[str, Any] | None]:
        """``(key, answer)``: a valid local answer, or None and the key to ``store`` the daemon's under."""
        try:
            key = (mid, marshal.dumps(fields, _MARSHAL_VERSION))
        except ValueError:  # not plain data: no exact key
            return None, None
        entry = self._entries.get(key)
        if entry is not None:
            generation, expiry, result = entry
            if generation == self._generation[mid] and time.monotonic_ns() < expiry:
                self.hits += 1
                return key, dict(result)
            del self._entries[key]
        self.misses += 1
        return key, None

    def stamp(self, mid: int) -> Stamp:
        """What an answer will be stored under, loaded before its request goes out: an
        answer computed before a clear is stored under the generation the clear replaced."""
        return self._generation[mid], self._ttl[mid], time.monotonic_ns()

    def store(self, key: Key, stamp: Stamp, result: dict[str, Any]) -> None:
        """Keep ``result`` if the daemon caches its model and computed it fresh."""
        generation, ttl, submitted = stamp
        if ttl and not result.get("cacheHit") and not result.get("fallback"):
            if key not in self._entries and len(self._entries) >= self.capacity:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (generation, submitted + ttl, {**result, "cacheHit": True, "local": True})

    def answer(self, mid: int, fields: Mapping[str, Any], ask: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The local answer to ``fields`` if one is valid, else ``ask()``'s (kept when fresh)."""
        key, hit = self.lookup(mid, fields)
        if hit is not None:
            return hit
        if key is None:
            return ask()
        stamp = self.stamp(mid)
        result = ask()
        self.store(key, stamp, result)
        return result

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["EdgeCache"]
