"""Shared fixtures: a unique shared-memory prefix per test, cleaned up after; no stale compiled code."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPILED_PACKAGES = ("kernel_abi", "ringbuf", "models", "shmd", "http_shim")


def _purge_stale_numba_caches() -> None:
    """Remove numba's on-disk caches when any source of the compiled packages changed.

    numba keys a cached function on its own file's mtime and size only, but inlines what it
    calls from other modules: after an edit to ``models/_encode.py`` the daemon kept running the
    old encoder through ``models/_serve.py``'s cache, and test_oracle reported the daemon's
    answers as wrong. A fresh clone (CI) has no caches; a working tree does.
    """
    sources = sorted(p for pkg in COMPILED_PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    stamp = ROOT / ".pytest_cache" / "numba-sources.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    for pkg in COMPILED_PACKAGES:
        for cached in (ROOT / pkg).rglob("__pycache__/*.nb[ic]"):
            cached.unlink(missing_ok=True)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest)


_purge_stale_numba_caches()  # before anything below imports (and so loads) compiled code


@pytest.fixture
def prefix() -> Iterator[str]:
    """A prefix no other test or run uses; fails the test if anything is left under it."""
    from ringbuf import remove_leftovers

    name = f"t{os.getpid()}x{secrets.token_hex(4)}"
    yield name
    # Remove first so one leaky test cannot poison /dev/shm, then report the leak.
    left = remove_leftovers(name)
    assert not left, f"test left shared-memory objects behind: {left}"
