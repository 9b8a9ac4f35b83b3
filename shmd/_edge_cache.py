"""The Python client's edge cache: recent answers of the daemon, served without a round trip.

An exact-match cache in the client process (kernel_abi/_rendezvous.py, "Edge
caches", states the protocol the C client follows too):

- The key is the model and the request's API fields as msgspec writes them in
  MessagePack (binary floats, types kept: ``1``, ``1.0`` and ``True`` differ).
  The payload is a deterministic function of those fields, so equal keys mean
  equal payloads, and the key costs ~0.4 µs where validating and encoding the
  payload costs several µs. Only a ``dict`` whose values are plain data (str,
  int, float, bool, None, list, dict: checked exactly, one pass over the
  values) is cached; anything else (a numpy value, a tuple, a mapping proxy,
  an enum member or a date as a field) goes to the daemon every time. Inside
  the arrays and objects the key is msgspec's encoding: an enum member, a date
  or a decimal nested there is written as the plain value it stands for, so
  such a request (which the codecs refuse) could get that plain twin's local
  answer instead of InvalidFields while the twin's entry lives. The API's
  fields are plain data; checking every nested value would cost more than the
  key itself.
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

import time
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

Key = tuple[int, bytes]  # model id, MessagePack bytes of the fields
Stamp = tuple[int, int, int]  # generation, ttl_ns, submit ns

_PLAIN = frozenset({str, int, float, bool, type(None), list, dict})  # exact types, not subclasses
_encode = msgspec.msgpack.Encoder().encode
_UNKEYABLE = (TypeError, ValueError, OverflowError)  # what msgspec raises for values it cannot write


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

    @staticmethod
    def key(mid: int, fields: Mapping[str, Any]) -> Key | None:
        """The exact key of ``fields``, or None when they are not plain data (never cached)."""
        if type(fields) is not dict or not _PLAIN.issuperset(map(type, fields.values())):
            return None
        try:
            return mid, _encode(fields)
        except _UNKEYABLE:
            return None

    def get(self, key: Key) -> dict[str, Any] | None:
        """A valid local answer under ``key`` (the caller's own copy), or None (counted as a miss)."""
        entry = self._entries.get(key)
        if entry is not None:
            generation, expiry, result = entry
            if generation == self._generation[key[0]] and time.monotonic_ns() < expiry:
                self.hits += 1
                return result.copy()
            del self._entries[key]
        self.misses += 1
        return None

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

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["EdgeCache"]
