"""A cache of built forward-pass programs, so a start-up does not parse each ``.tflite`` again.

Parsing a graph with LiteRT's flatbuffer schema costs ~100-150 ms per start-up on this
machine (importing the generated schema module, 385 classes, is most of it), every time,
for the same bytes. The program built from a file depends only on those bytes and on the
code that builds it, so it is kept under a key of both: the file's sha256 and a digest of
``_program.py`` and ``_ops.py``. Entries are ``.npz`` files read with ``allow_pickle=False``,
next to numba's own cache (``$NUMBA_CACHE_DIR`` when set, else ``models/__pycache__``), which
is trusted the same way: it holds native code. Written atomically (temporary file, then
rename), so concurrent start-ups never read half an entry; a missing, unreadable or
malformed entry is only a miss, and a directory that cannot be written is no cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
_CODE_DIGEST = hashlib.sha256(b"".join((_HERE / f).read_bytes() for f in ("_program.py", "_ops.py"))).hexdigest()


def directory() -> Path:
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    return Path(numba_dir) / "shmd-programs" if numba_dir else _HERE / "__pycache__" / "programs"


def key(data: bytes) -> str:
    """The entry of a program built from ``data`` by this code."""
    return hashlib.sha256(_CODE_DIGEST.encode() + hashlib.sha256(data).digest()).hexdigest()


def load(entry: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``entry``, or None (a miss: absent, unreadable, malformed)."""
    try:
        with np.load(directory() / f"{entry}.npz", allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError):
        return None


def store(entry: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep ``arrays`` under ``entry``; silently nothing when the directory cannot be written."""
    where = directory()
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, where / f"{entry}.npz")
    except OSError:
        Path(tmp).unlink(missing_ok=True)
