"""How strings (agentId, component) travel: as their 64-bit FNV-1a hash.

FNV-1a over the UTF-8 bytes, offset basis 0xcbf29ce484222325, prime
0x100000001b3. It is trivial to reimplement in C (the C client does) and
stable across processes and runs, unlike Python's ``hash``.
"""

from __future__ import annotations

from functools import lru_cache

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


@lru_cache(maxsize=1 << 16)  # callers repeat the same few thousand agent ids; a byte loop costs ~0.15 µs/byte
def hash_str(text: str) -> int:
    """The 64-bit FNV-1a hash of ``text`` encoded as UTF-8."""
    h = FNV64_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * FNV64_PRIME) & _MASK
    return h
