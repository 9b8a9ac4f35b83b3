"""Shared fixtures: a unique shared-memory prefix per test, cleaned up after; no stale compiled code."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from shmd._stale_code import purge_stale_numba_caches

purge_stale_numba_caches()  # before any test loads compiled code


@pytest.fixture
def prefix() -> Iterator[str]:
    """A prefix no other test or run uses; fails the test if anything is left under it."""
    from ringbuf import remove_leftovers

    name = f"t{os.getpid()}x{secrets.token_hex(4)}"
    yield name
    # Remove first so one leaky test cannot poison /dev/shm, then report the leak.
    left = remove_leftovers(name)
    assert not left, f"test left shared-memory objects behind: {left}"
