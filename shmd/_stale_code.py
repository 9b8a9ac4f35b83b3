"""Remove numba's on-disk caches when any source of the project's compiled packages changed.

numba keys a cached function on its own file's mtime and size only, but inlines what it calls
from other modules: after an edit to ``models/_encode.py`` a daemon started from a working
tree kept running the old encoder through ``models/_serve.py``'s cache, and test_oracle
reported its answers as wrong. numba cannot see that, so this module looks at every source of
the compiled packages together: when any file's mtime or size differs from the last run's
stamp, every cached ``.nbi``/``.nbc`` beside them goes and is compiled afresh on first use.

A fresh install or clone has no caches; an upgrade rewrites every file. Only working trees
meet the trap: ``shmd serve`` and the test suite check before anything compiled is loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Every top-level package with numba-compiled code (cache=True), and the root they sit in.
COMPILED_PACKAGES = ("kernel_abi", "ringbuf", "models", "shmd", "http_shim")
ROOT = Path(__file__).resolve().parent.parent
STAMP_NAME = "numba-sources.stamp"


def _sources_fingerprint(root: Path, packages: tuple[str, ...]) -> str:
    """One digest over every source's path, mtime and size: what numba's own check reads, for all at once."""
    h = hashlib.sha256()
    for path in sorted(p for pkg in packages for p in (root / pkg).rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()


def purge_stale_numba_caches(root: Path = ROOT, packages: tuple[str, ...] = COMPILED_PACKAGES) -> int | None:
    """Remove the packages' numba caches if their sources changed since the last call; how many went.

    None when the caches are current (or the tree is read-only, where numba does not cache beside
    the sources either). Call it before the process loads any compiled function.
    """
    stamp = root / packages[0] / "__pycache__" / STAMP_NAME
    fingerprint = _sources_fingerprint(root, packages)
    try:
        if stamp.read_text() == fingerprint:
            return None
    except OSError:  # no stamp yet: a first run, or caches from before stamps existed
        pass
    removed = 0
    for pkg in packages:
        for cached in (root / pkg).rglob("__pycache__/*.nb[ic]"):
            try:
                cached.unlink(missing_ok=True)
            except OSError:  # a tree this user cannot write: numba does not cache there for it either
                continue
            removed += 1
    try:
        stamp.parent.mkdir(exist_ok=True)
        tmp = stamp.with_name(f"{STAMP_NAME}.{os.getpid()}")
        tmp.write_text(fingerprint)
        tmp.replace(stamp)  # atomic: a concurrent reader sees the old stamp or the new one
    except OSError:
        return None
    return removed
