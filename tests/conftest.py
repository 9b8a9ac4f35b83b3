"""Shared fixtures: a unique shared-memory prefix per test, cleaned up after."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from ringbuf import remove_leftovers


@pytest.fixture
def prefix() -> Iterator[str]:
    """A prefix no other test or run uses; fails the test if anything is left under it."""
    name = f"t{os.getpid()}x{secrets.token_hex(4)}"
    yield name
    # Remove first so one leaky test cannot poison /dev/shm, then report the leak.
    left = remove_leftovers(name)
    assert not left, f"test left shared-memory objects behind: {left}"
