"""Synthetic failure data: components sampled every minute, some degrading towards failure.

45% of components are healthy: health fluctuates around their own level with noise and,
sometimes, a transient dip that recovers (which looks like the start of a crash). The
rest will fail with a kind from kernel_abi.FailureType after a lead time drawn
log-uniformly from 1 minute to 4 hours; degradation starts a kind-specific time D
before the failure and follows a kind-specific shape:

- resource exhaustion: long (D 60-300 min), linear; the key metric climbs to 2x baseline
- performance degradation: D 30-180 min, quadratic; the metric (latency) climbs to 3x
- crash: short (D 2-20 min), abrupt (4th power); frequent earlier failures
- hang: D 5-40 min, linear with oscillation; the metric (throughput) falls towards 0
- data corruption: D 10-60 min, shallow decline with sporadic sharp drops

Only failures within the 60-minute horizon are positive; a component that will fail
in 3 hours is a negative that already shows early degradation.
"""

from __future__ import annotations

import numpy as np

from kernel_abi import FAILURE_PAYLOAD, FailureType

from ._spec import FAILURE_HORIZON_MS

F = FailureType
_D_RANGE = {
    F.RESOURCE_EXHAUSTION: (60, 300),
    F.PERFORMANCE_DEGRADATION: (30, 180),
    F.CRASH: (2, 20),
    F.HANG: (5, 40),
    F.DATA_CORRUPTION: (10, 60),
}
_POWER = {
    F.RESOURCE_EXHAUSTION: 1.0,
    F.PERFORMANCE_DEGRADATION: 2.0,
    F.CRASH: 4.0,
    F.HANG: 1.0,
    F.DATA_CORRUPTION: 1.0,
}
_METRIC = {
    F.RESOURCE_EXHAUSTION: 1.0,
    F.PERFORMANCE_DEGRADATION: 2.0,
    F.CRASH: 0.2,
    F.HANG: -0.9,
    F.DATA_CORRUPTION: 0.0,
}
_DEPTH = {
    F.RESOURCE_EXHAUSTION: 1.0,
    F.PERFORMANCE_DEGRADATION: 1.0,
    F.CRASH: 1.0,
    F.HANG: 1.0,
    F.DATA_CORRUPTION: 0.5,
}


def generate(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` payload records and labels label (fails within horizon), time_ms (-1), type."""
    rng = np.random.default_rng(seed)
    kind = np.where(rng.random(n) < 0.45, 0, rng.integers(1, 6, n))
    lead = np.exp(rng.uniform(np.log(1.0), np.log(240.0), n))  # minutes until failure
    t = np.arange(-20, 1)[None, :]  # minutes relative to now: 20 history samples + now
    h0 = rng.uniform(0.7, 0.98, (n, 1))
    noise = rng.uniform(0.01, 0.05, (n, 1))
    health = h0 + rng.normal(0, 1, (n, 21)) * noise
    metric_dev = rng.normal(0, 0.05, (n, 21))

    # Healthy components: transient dips that recover.
    dip = (kind == 0) & (rng.random(n) < 0.35)
    start = rng.integers(-20, 1, n)[:, None]
    width = rng.integers(2, 8, n)[:, None]
    in_dip = (t >= start) & (t < start + width) & dip[:, None]
    health -= in_dip * rng.uniform(0.1, 0.45, (n, 1))
    metric_dev += in_dip * rng.uniform(0.1, 0.6, (n, 1))

    for f in list(F)[1:]:
        rows = kind == f
        m = int(rows.sum())
        d = rng.uniform(*_D_RANGE[f], (m, 1))
        prog = np.clip(1 - (lead[rows, None] - t) / d, 0, 1) ** _POWER[f]  # 0 healthy .. 1 failed
        h_fail = rng.uniform(0.05, 0.3, (m, 1))
        drop = (h0[rows] - h_fail) * prog * _DEPTH[f]
        if f == F.HANG:
            drop = drop * (1 + 0.3 * np.sin(t * rng.uniform(0.5, 1.5, (m, 1))))
        if f == F.DATA_CORRUPTION:
            drop = drop + (rng.random((m, 21)) < 0.4 * prog) * rng.uniform(0.2, 0.5, (m, 21))
        health[rows] -= drop
        metric_dev[rows] += _METRIC[f] * prog
    health = np.clip(health, 0, 1)

    baseline = np.exp(rng.uniform(0, 8, n)) * np.where(rng.random(n) < 0.1, -1, 1)
    current = baseline * (1 + metric_dev[:, -1])
    slope = np.polyfit(np.arange(5), health[:, -5:].T, 1)[0]  # per minute
    trend = np.clip(slope * 20 + rng.normal(0, 0.05, n), -1, 1)

    p_fail = np.where(kind == F.CRASH, 0.2, np.where(kind == 0, 0.03, 0.06))
    fhist = (rng.random((n, 10)) < p_fail[:, None]).astype(np.uint8)
    any_f = fhist.any(1)
    last = 9 - np.argmax(fhist[:, ::-1], axis=1)  # index of the latest event
    tsl = np.where(any_f, (10 - last) * rng.uniform(1, 3, n) * 3.6e6, rng.lognormal(np.log(1.2e9), 0.7, n))

    rec = np.zeros(n, FAILURE_PAYLOAD)
    rec["component_hash"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    rec["health_score"] = health[:, -1]
    rec["current_value"] = current
    rec["baseline"] = baseline
    rec["trend"] = trend
    rec["historical_health"] = health[:, :-1]
    rec["time_since_last_failure"] = tsl
    rec["failure_history"] = fhist
    time_ms = lead * 60_000.0
    pos = (kind > 0) & (time_ms <= FAILURE_HORIZON_MS)
    labels = {
        "label": pos.astype(np.float32),
        "time_ms": np.where(pos, time_ms, -1.0),
        "type": np.where(pos, kind, 0).astype(np.int64),
    }
    return rec, labels
