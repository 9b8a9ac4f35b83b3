"""Synthetic threat data: benign agents and five attack kinds with overlapping signatures.

Benign agents have a "busyness" that raises latency, resource use, message rate and
harmless anomalies together. Each attack shifts a few signals by an intensity drawn
uniformly in [0.05, 1]; weak attacks look benign and a busy benign agent looks like a
weak DoS or cryptominer, so no single threshold separates them:

- exfiltration: many messages, a little latency, medium/high anomalies of few types
- privilege escalation: errors (denied operations), high/critical anomalies of many types
- denial of service: message flood, high latency and errors, resource pressure
- cryptomining: resource usage near 1, fewer messages, low-severity anomalies
- lateral movement: more messages and errors, many distinct anomaly types, rising
  threat history and a recent previous threat

The recommended action is a rule of the true kind and intensity (docs/MODELS.md).
"""

from __future__ import annotations

import numpy as np

from kernel_abi import THREAT_PAYLOAD, RecommendedAction, ThreatType

T, A = ThreatType, RecommendedAction
_KIND_P = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]


def _action(kind: np.ndarray, u: np.ndarray) -> np.ndarray:
    act = np.full(kind.shape, A.MONITOR, np.int64)
    strong = u >= 0.35
    act[strong & np.isin(kind, [T.DENIAL_OF_SERVICE, T.CRYPTOMINING])] = A.THROTTLE
    act[strong & np.isin(kind, [T.EXFILTRATION, T.LATERAL_MOVEMENT])] = A.ISOLATE
    act[strong & (kind == T.PRIVILEGE_ESCALATION)] = A.TERMINATE
    act[(u >= 0.75) & (kind == T.CRYPTOMINING)] = A.TERMINATE
    act[kind == T.NONE] = A.ALLOW
    return act


def generate(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` payload records and labels is_attack, type, action, intensity."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(6, n, p=_KIND_P)
    u = np.where(kind > 0, rng.uniform(0.05, 1.0, n), 0.0)
    b = rng.beta(1.5, 3, n)  # benign busyness
    k = {t: (kind == t) * u for t in T}

    latency = rng.lognormal(np.log(20 + 80 * b), 0.5) * (
        1 + 0.5 * k[T.EXFILTRATION] + 3 * k[T.DENIAL_OF_SERVICE]
    )
    latency *= 1 + 0.3 * k[T.CRYPTOMINING]
    err = rng.beta(1, 60, n) + 0.03 * b + 0.15 * k[T.PRIVILEGE_ESCALATION] + 0.25 * k[T.DENIAL_OF_SERVICE]
    err += 0.08 * k[T.LATERAL_MOVEMENT]
    res = 0.15 + 0.5 * b + rng.normal(0, 0.1, n) + 0.1 * k[T.EXFILTRATION] + 0.3 * k[T.DENIAL_OF_SERVICE]
    res += 0.55 * k[T.CRYPTOMINING]
    msg = rng.lognormal(np.log(20 + 200 * b), 0.6) * np.exp(
        1.5 * k[T.EXFILTRATION]
        + 2.5 * k[T.DENIAL_OF_SERVICE]
        - 0.7 * k[T.CRYPTOMINING]
        + 0.8 * k[T.LATERAL_MOVEMENT]
    )

    # Anomalies by severity: benign ones are mostly low; each attack adds its own mix.
    lam = np.zeros((n, 4))
    lam += (0.3 + 1.5 * b)[:, None] * np.array([0.6, 0.3, 0.08, 0.02])
    lam += (3 * k[T.EXFILTRATION])[:, None] * np.array([0.1, 0.5, 0.4, 0.0])
    lam += (4 * k[T.PRIVILEGE_ESCALATION])[:, None] * np.array([0.0, 0.1, 0.5, 0.4])
    lam += (2 * k[T.DENIAL_OF_SERVICE])[:, None] * np.array([0.2, 0.6, 0.2, 0.0])
    lam += (1.5 * k[T.CRYPTOMINING])[:, None] * np.array([0.8, 0.2, 0.0, 0.0])
    lam += (3 * k[T.LATERAL_MOVEMENT])[:, None] * np.array([0.2, 0.4, 0.3, 0.1])
    sev = rng.poisson(lam)
    while (over := sev.sum(1) > 64).any():  # API cap: at most 64 anomalies
        sev[over] = sev[over] // 2
    count = sev.sum(1)
    extra = rng.poisson(0.5 + 3 * k[T.PRIVILEGE_ESCALATION] + 4 * k[T.LATERAL_MOVEMENT])
    distinct = np.minimum(count, 1 + extra) * (count > 0)

    hist = rng.beta(1, 20, (n, 10))
    incident = rng.random(n) < 0.1
    hist[incident] = np.maximum(
        hist[incident], rng.uniform(0.2, 0.8, (incident.sum(), 10)) * (rng.random((incident.sum(), 10)) < 0.3)
    )
    ramp = np.linspace(0, 1, 10)[None, :]
    hist += (0.5 * k[T.LATERAL_MOVEMENT] + 0.2 * u * (rng.random(n) < 0.5))[:, None] * ramp
    tsl = rng.lognormal(np.log(3e7), 1.5, n) * np.exp(
        -3 * k[T.LATERAL_MOVEMENT] - 1.0 * u * (rng.random(n) < 0.3)
    )

    rec = np.zeros(n, THREAT_PAYLOAD)
    rec["agent_hash"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    rec["average_latency"] = latency
    rec["error_rate"] = np.clip(err, 0, 1)
    rec["resource_usage"] = np.clip(res, 0, 1)
    rec["message_frequency"] = msg
    rec["historical_threats"] = np.clip(hist, 0, 1)
    rec["time_since_last_threat"] = tsl
    rec["anomaly_count"] = count
    rec["severity_counts"] = sev
    rec["distinct_anomaly_types"] = distinct
    labels = {
        "is_attack": (kind > 0).astype(np.float32),
        "type": kind.astype(np.int64),
        "action": _action(kind, u),
        "intensity": u.astype(np.float32),
    }
    return rec, labels
