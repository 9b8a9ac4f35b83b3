"""A working tree's edit never runs as stale compiled code: numba's caches go when any source changes."""

from __future__ import annotations

import os
from pathlib import Path

from shmd._stale_code import purge_stale_numba_caches


def _tree(root: Path) -> tuple[Path, Path, Path]:
    """Two compiled packages, one inlining the other, each with a cached entry beside it."""
    for pkg in ("low", "high"):
        (root / pkg / "__pycache__").mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "low" / "encode.py").write_text("def f(x):\n    return x\n")
    (root / "high" / "serve.py").write_text("from low.encode import f\n")
    caches = [
        root / "low" / "__pycache__" / "encode.f-1.py311.nbi",
        root / "high" / "__pycache__" / "serve.g-1.py311.nbc",
    ]
    for c in caches:
        c.write_bytes(b"cached")
    return root / "low" / "encode.py", caches[0], caches[1]


def test_caches_go_when_an_inlined_module_changes_and_stay_otherwise(tmp_path: Path) -> None:
    packages = ("low", "high")
    source, low_cache, high_cache = _tree(tmp_path)
    assert purge_stale_numba_caches(tmp_path, packages) == 2  # no stamp yet: nothing proves them current

    for c in (low_cache, high_cache):
        c.write_bytes(b"compiled afresh")
    assert purge_stale_numba_caches(tmp_path, packages) is None  # nothing changed: kept
    assert low_cache.exists() and high_cache.exists()

    source.write_text("def f(x):\n    return x + 1\n")  # the edit numba misses for high's cache
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert purge_stale_numba_caches(tmp_path, packages) == 2
    assert not high_cache.exists(), "the caller's cache still holds the old inlined code"
    assert not low_cache.exists()
