"""Synthetic memory accesses: 22-access traces (20 history, current, next) of six patterns.

Addresses are multiples of 2**-16 (a "line") in [0, 1):

- sequential: stride +-1 line
- strided: a fixed stride of +-2..128 lines
- tiled: m (2..6) inner steps of a small stride, then a jump to the next row (a
  periodic stride pattern, period m)
- looping: a strided loop over N = 3..40 elements; with N <= 20 the previous visit of
  the current address tells what comes next, with larger N only the wrap is hard
- pointer chasing: a cycle of L = 3..30 random lines (a linked list); L <= 20 repeats
  inside the history, longer lists are unpredictable
- random: uniform lines in a region

Any access may instead be interference at a random line (half the traces have none,
the rest a rate up to 15%). Access types follow a per-trace motif of period 1..4 drawn
from a pattern-specific read/write/execute mix, with 10% of types flipped.
"""

from __future__ import annotations

import numpy as np

from kernel_abi import MEMORY_PAYLOAD

from ._spec import ADDR_LINE

PATTERNS = ("sequential", "strided", "tiled", "looping", "pointer_chasing", "random")
_PATTERN_P = [0.15, 0.15, 0.15, 0.2, 0.2, 0.15]
_LINES = 1 << 16
_TYPE_MIX = {  # read, write, execute
    "sequential": [0.6, 0.4, 0.0],
    "strided": [0.6, 0.4, 0.0],
    "tiled": [0.7, 0.3, 0.0],
    "looping": [0.3, 0.2, 0.5],
    "pointer_chasing": [0.85, 0.15, 0.0],
    "random": [0.5, 0.4, 0.1],
}


def _trace(rng: np.random.Generator, pattern: str) -> np.ndarray:
    k = np.arange(22)
    if pattern in ("sequential", "strided"):
        stride = 1 if pattern == "sequential" else int(rng.choice([2, 4, 8, 16, 32, 64, 128]))
        stride *= 1 if rng.random() < 0.8 else -1
        return rng.integers(3000, _LINES - 3000) + stride * k
    if pattern == "tiled":
        m, s, row = int(rng.integers(2, 7)), int(rng.choice([1, 2, 4, 8])), int(rng.integers(64, 512))
        phase = k + int(rng.integers(0, m))
        return rng.integers(0, _LINES // 2) + (phase // m) * row + (phase % m) * s
    if pattern == "looping":
        n_el, s = int(rng.integers(3, 41)), int(rng.choice([1, 1, 2, 4, 8, 16]))
        return rng.integers(0, _LINES - 1000) + s * ((k + int(rng.integers(0, n_el))) % n_el)
    if pattern == "pointer_chasing":
        length = int(rng.integers(3, 31))
        base = int(rng.integers(0, _LINES - 8192))
        nodes = base + rng.choice(8192, length, replace=False)
        return nodes[(k + int(rng.integers(0, length))) % length]
    base = int(rng.integers(0, _LINES - 4096))
    return base + rng.integers(0, 4096, 22)


def generate(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` payload records and labels next_address, next_type, pattern (index into PATTERNS)."""
    rng = np.random.default_rng(seed)
    pattern = rng.choice(len(PATTERNS), n, p=_PATTERN_P)
    lines = np.empty((n, 22), np.int64)
    types = np.empty((n, 22), np.int64)
    for i in range(n):
        name = PATTERNS[pattern[i]]
        lines[i] = _trace(rng, name)
        period = int(rng.integers(1, 5))
        motif = rng.choice(3, period, p=_TYPE_MIX[name])
        types[i] = motif[np.arange(22) % period]
    rate = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 0.15, n))
    noisy = rng.random((n, 22)) < rate[:, None]
    lines = np.where(noisy, rng.integers(0, _LINES, (n, 22)), lines)
    flip = rng.random((n, 22)) < 0.1
    types = np.where(flip, rng.integers(0, 3, (n, 22)), types)
    addr = (np.mod(lines, _LINES) * ADDR_LINE).astype(np.float32)

    gaps = rng.exponential(rng.uniform(10, 1000, (n, 1)), (n, 21))
    ts = rng.uniform(0, 1e12, (n, 1)) + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, 1)], 1)
    strides = np.abs(np.diff(lines[:, :21], axis=1))
    locality = np.clip((strides <= 64).mean(1) + rng.normal(0, 0.05, n), 0, 1)

    rec = np.zeros(n, MEMORY_PAYLOAD)
    rec["agent_hash"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    rec["access_history"] = addr[:, :20]
    rec["access_timestamps"] = ts[:, :20]
    rec["access_types"] = types[:, :20]
    rec["current_address"] = addr[:, 20]
    rec["locality_score"] = locality
    labels = {"next_address": addr[:, 21], "next_type": types[:, 21], "pattern": pattern}
    return rec, labels
