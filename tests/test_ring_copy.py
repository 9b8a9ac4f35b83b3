"""The rings' row copy (one memcpy per run that does not wrap): every offset, both directions, its guards."""

from __future__ import annotations

import numpy as np
import pytest

from ringbuf import _core as core

CAPACITY, WIDTH = 8, 24


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, WIDTH), dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 3, CAPACITY])
def test_rows_land_at_their_ring_slots_from_every_start_and_come_back_intact(n: int) -> None:
    """Runs that wrap around the ring's end once (or not at all), from every start index, past one lap."""
    mask = np.uint64(CAPACITY - 1)
    for first in range(2 * CAPACITY):
        src = _rows(n, first)
        slots = np.zeros((CAPACITY, WIDTH), np.uint8)
        core.copy_into_ring(src, slots, np.uint64(first), n)
        at = (first + np.arange(n)) & int(mask)
        assert np.array_equal(slots[at], src), f"first={first}"
        untouched = np.setdiff1d(np.arange(CAPACITY), at)
        assert not slots[untouched].any(), f"first={first}: a slot outside the run was written"
        back = np.zeros((n + 1, WIDTH), np.uint8)  # one row more than copied: must stay untouched
        core.copy_from_ring(slots, np.uint64(first), back, n)
        assert np.array_equal(back[:n], src) and not back[n].any(), f"first={first}"


def test_rows_of_another_width_or_too_many_rows_are_refused_not_copied() -> None:
    slots = np.zeros((CAPACITY, WIDTH), np.uint8)
    with pytest.raises(ValueError, match="contiguous byte rows of one width"):
        core.copy_into_ring(np.ones((2, WIDTH - 8), np.uint8), slots, np.uint64(0), 2)
    with pytest.raises(ValueError, match="contiguous byte rows of one width"):
        core.copy_into_ring(np.ones((2, 2 * WIDTH), np.uint8)[:, ::2], slots, np.uint64(0), 2)
    with pytest.raises(ValueError, match="more rows to copy than the array holds"):
        core.copy_into_ring(np.ones((2, WIDTH), np.uint8), slots, np.uint64(0), 3)
    with pytest.raises(ValueError, match="more rows to copy than the array holds"):
        core.copy_from_ring(slots, np.uint64(0), np.zeros((2, WIDTH), np.uint8), 3)
    assert not slots.any(), "a refused copy wrote nothing"
