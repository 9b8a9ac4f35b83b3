"""What ``GET /api/ml/models`` and ``shmd models list`` show: per model, the repository on disk beside
what the daemon serves (its stats segment's ``model_state`` words).

Manifests are read from disk (the daemon's ``models_dir`` is in the segment's metadata), so a
listing costs the daemon nothing. ``models`` (no numba, no LiteRT: ~20 ms) is imported with this
module, not in the shim's first ``GET /api/ml/models``: that import held its event loop, and the
predictions waiting behind it, 20 ms (``bench lifecycle``, right after the first load).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kernel_abi import ModelId
from models._repository import MANIFEST, version_dir, versions_on_disk

from . import _model_states as ms
from ._stats_segment import StatsSegment

RESULTS = ("swapped", "refused", "not_found", "unchanged")  # ms.RESULT_* names


def _manifest(models_dir: str | None, mid: ModelId, version: int) -> dict[str, Any]:
    try:
        return json.loads((version_dir(models_dir, mid, version) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def model_report(seg: StatsSegment, mid: ModelId, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One model: versions on disk, the one serving and its state, when it was loaded, its sha256 and metrics."""
    a = {k: np.array(v) for k, v in seg.arrays.items()} if arrays is None else arrays
    models_dir = seg.meta.get("models_dir") or None
    state = a["model_state"][mid]
    serving = int(state[ms.MS_VERSION])
    manifest = _manifest(models_dir, mid, serving) if serving else {}
    loaded_ns = int(state[ms.MS_LOADED_AT_NS])
    done = int(state[ms.MS_DONE_SEQ])
    return {
        "model": mid.name.lower(),
        "servingVersion": serving,
        "state": ms.STATES[int(state[ms.MS_STATE])],
        "loadingVersion": int(state[ms.MS_LOADING]) or None,
        "ready": int(state[ms.MS_STATE]) != ms.STATE_ABSENT and serving > 0,
        "policy": int(state[ms.MS_PINNED]) or "latest",
        "versionsOnDisk": versions_on_disk(models_dir, mid),
        "loadedAt": datetime.fromtimestamp(loaded_ns / 1e9, UTC).isoformat() if loaded_ns else None,
        "sha256": manifest.get("files", {}),
        "heldoutMetrics": manifest.get("heldout_metrics", {}),
        "lastLoad": {
            "request": done,
            "result": RESULTS[int(state[ms.MS_RESULT])],
            "reason": ms.reason(a, int(mid)),
            "swapMs": round(int(state[ms.MS_SWAP_NS]) / 1e6, 3),
        },
    }


def models_report(seg: StatsSegment) -> list[dict[str, Any]]:
    a = {k: np.array(v) for k, v in seg.arrays.items()}
    return [model_report(seg, mid, a) for mid in ModelId]


def wait_outcome(seg: StatsSegment, mid: int, seq: int, timeout_s: float) -> tuple[int, int, str] | None:
    """Block (polling every 5 ms) until the daemon answers load request ``seq``; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = ms.outcome(seg.arrays, mid, seq)
        if got is not None or time.monotonic() > deadline:
            return got
        time.sleep(0.005)
