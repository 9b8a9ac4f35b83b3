"""A running daemon's metrics as plain dicts, read from its stats segment.

Readers (the HTTP shim, ``shmd status``) call these with no request to the
daemon: the arrays are mapped shared memory the compiled loop updates in
place. Every array is copied once up front so one snapshot is internally
consistent enough (counters may still lag each other by one pass).

The per-model dict keeps the seed's field names (``modelName``,
``totalInferences``, ``cacheHits``, ... ``p99LatencyMs``, end-to-end latency)
and adds what the seed did not have: service-time latency, request/error
counts and batch sizes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from kernel_abi import ModelId, Status

from . import _metrics as met
from . import _model_states as ms
from ._metrics import ADAPT_MAX_NS, EVICTIONS, HITS, INSERTS, MISSES, REFRESH_DRIFT, REFRESH_STABLE
from ._stats_segment import StatsSegment

HEARTBEAT_FRESH_NS = 1_000_000_000  # the daemon's housekeeping runs every <= ~100 ms; 1 s means stuck

MODEL_NAMES: tuple[str, ...] = tuple(m.name.lower() for m in ModelId)


def _round(x: float) -> float:
    return round(x, 6)


def _latency(metrics: met.MetricsArrays, mid: int, kind: int) -> dict[str, float]:
    return {k: _round(v) for k, v in metrics.latency(mid, kind).items()}


def _batch_sizes(row: np.ndarray) -> dict[str, int]:
    """Batch-size histogram keyed "1", "2-3", "4-7", ... (only non-empty buckets)."""
    out: dict[str, int] = {}
    for k, n in enumerate(row):
        if n:
            lo, hi = 1 << k, (1 << (k + 1)) - 1
            key = str(lo) if lo == hi else (f"{lo}+" if k == met.N_BATCH_BUCKETS - 1 else f"{lo}-{hi}")
            out[key] = int(n)
    return out


def _copy(seg: StatsSegment) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in seg.arrays.items()}


def _metrics_of(a: dict[str, np.ndarray]) -> met.MetricsArrays:
    return met.MetricsArrays(a["model"], a["hist"], a["summary"], a["batch_hist"], a["channel"])


def model_snapshot(seg: StatsSegment, name: str, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The seed's metrics object for one model (KeyError for an unknown name)."""
    mid = int(ModelId[name.upper()]) if name in MODEL_NAMES else None
    if mid is None:
        raise KeyError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    a = _copy(seg) if arrays is None else arrays
    m = _metrics_of(a)
    counters = a["model"][mid]
    hits, misses = int(counters[met.CACHE_HITS]), int(counters[met.CACHE_MISSES])
    e2e = _latency(m, mid, met.E2E)
    return {
        "modelName": name,
        "modelVersion": int(a["model_state"][mid, ms.MS_VERSION]),
        # The seed counts an answer served from the cache as an inference too.
        "totalInferences": hits + int(counters[met.INFERENCES]),
        "cacheHits": hits,
        "cacheMisses": misses,
        "cacheHitRate": _round(hits / (hits + misses)) if hits + misses else 0.0,
        "averageLatencyMs": e2e["avg"],
        "minLatencyMs": e2e["min"],
        "maxLatencyMs": e2e["max"],
        "p50LatencyMs": e2e["p50"],
        "p95LatencyMs": e2e["p95"],
        "p99LatencyMs": e2e["p99"],
        "requests": int(counters[met.REQUESTS]),
        "modelInferences": int(counters[met.INFERENCES]),
        "errors": int(counters[met.ERRORS]),
        "batches": int(counters[met.BATCHES]),
        "serviceLatencyMs": _latency(m, mid, met.SERVICE),
        "batchSizes": _batch_sizes(a["batch_hist"][mid]),
        "versions": ms.version_snapshot(a, mid),
    }


def channel_snapshot(seg: StatsSegment, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per channel: submitted, completed, rejected (total and by status), queue depth, corrupt."""
    a = _copy(seg) if arrays is None else arrays
    out: dict[str, Any] = {}
    for c, name in enumerate(seg.meta.get("channels", [])):
        row = a["channel"][c]
        by_status = {
            Status(s).name.lower(): int(row[met.REJECTED + s]) for s in range(1, len(Status)) if row[met.REJECTED + s]
        }
        out[name] = {
            "submitted": int(row[met.SUBMITTED]),
            "completed": int(row[met.COMPLETED]),
            "rejected": int(sum(by_status.values())),
            "rejectedByStatus": by_status,
            "queueDepth": int(a["gauges"][c][0]),
            "corrupt": bool(a["gauges"][c][1]),
        }
    return out


def cache_snapshot(seg: StatsSegment, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per model: hits, misses, hit rate, inserts, evictions, live entries, TTL (now) and capacity.

    With an adaptive TTL, ``refreshesStable`` / ``refreshesDrifting`` count the expired
    entries whose recomputed answer was the same / another one (what moved the TTL).
    """
    a = _copy(seg) if arrays is None else arrays
    out: dict[str, Any] = {}
    for m in ModelId:
        s = a["cache_stats"][m]
        hits, misses = int(s[HITS]), int(s[MISSES])
        ttl_ns = int(a["cache_ttl_ns"][m])
        out[m.name.lower()] = {
            "hits": hits,
            "misses": misses,
            "hitRate": _round(hits / (hits + misses)) if hits + misses else 0.0,
            "inserts": int(s[INSERTS]),
            "evictions": int(s[EVICTIONS]),
            "entries": int(a["cache_entries"][m]),
            "capacity": int(seg.meta.get("cache_capacity", 0)),
            "ttlMs": _round(ttl_ns / 1e6),
            "enabled": ttl_ns > 0,
            "adaptive": bool(a["cache_adapt"][m][ADAPT_MAX_NS] > 0),
            "refreshesStable": int(s[REFRESH_STABLE]),
            "refreshesDrifting": int(s[REFRESH_DRIFT]),
        }
    return out


def daemon_snapshot(seg: StatsSegment, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Who serves (pid, prefix, backend, model versions) and whether its loop is alive."""
    a = _copy(seg) if arrays is None else arrays
    last_ns, passes = (int(x) for x in a["heartbeat"][:2])
    age_ns = time.monotonic_ns() - last_ns if last_ns else -1
    return {
        "pid": int(seg.meta.get("pid", 0)),
        "prefix": seg.meta.get("prefix", ""),
        "backend": seg.meta.get("backend", ""),
        "models": {m.name.lower(): int(a["model_state"][m, ms.MS_VERSION]) for m in ModelId},
        "passes": passes,
        "heartbeatAgeMs": _round(age_ns / 1e6) if age_ns >= 0 else -1.0,
        "heartbeatFresh": 0 <= age_ns < HEARTBEAT_FRESH_NS,
        "started": bool(a["startup"][0]),  # the start-up probe is through (event=ready)
    }


def model_readiness(a: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per model: ready (a validated, warmed version serves), that version and the state."""
    out = {}
    for m in ModelId:
        state = a["model_state"][m]
        version = int(state[ms.MS_VERSION])
        out[m.name.lower()] = {
            "ready": version > 0 and int(state[ms.MS_STATE]) != ms.STATE_ABSENT,
            "version": version,
            "state": ms.STATES[int(state[ms.MS_STATE])],
        }
    return out


def readiness(seg: StatsSegment) -> tuple[bool, list[str], dict[str, dict[str, Any]]]:
    """Ready when every model is loaded, the loop's heartbeat is fresh and no channel is corrupt.

    Then what is wrong (empty when ready) and ``model_readiness``. A model loading a new
    version stays ready: its serving version answers until the swap.
    """
    a = _copy(seg)
    problems: list[str] = []
    per_model = model_readiness(a)
    for name, m in per_model.items():
        if not m["ready"]:
            problems.append(f"model {name} is not loaded")
    d = daemon_snapshot(seg, a)
    if not d["heartbeatFresh"]:
        problems.append(f"poll loop heartbeat is stale: age={d['heartbeatAgeMs']} ms (limit 1000 ms)")
    for c, name in enumerate(seg.meta.get("channels", [])):
        if a["gauges"][c][1]:
            problems.append(f"channel {name} is marked corrupt")
    return not problems, problems, per_model


def snapshot(seg: StatsSegment) -> dict[str, Any]:
    """Everything: ``models`` (the seed's metrics), ``channels``, ``cache``, ``daemon``."""
    a = _copy(seg)
    return {
        "models": {name: model_snapshot(seg, name, a) for name in MODEL_NAMES},
        "channels": channel_snapshot(seg, a),
        "cache": cache_snapshot(seg, a),
        "daemon": daemon_snapshot(seg, a),
    }


__all__ = [
    "HEARTBEAT_FRESH_NS",
    "MODEL_NAMES",
    "cache_snapshot",
    "channel_snapshot",
    "daemon_snapshot",
    "model_readiness",
    "model_snapshot",
    "readiness",
    "snapshot",
]
