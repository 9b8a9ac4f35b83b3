"""Valid request fields of each model, in the API's names (API.md).

``WORKLOAD`` is the seed document's curl example. Tests, benchmarks and the
examples in the docs start from these.
"""

from __future__ import annotations

from typing import Any

WORKLOAD: dict[str, Any] = {
    "agentId": "agent-123",
    "historicalCpu": [0.5, 0.6, 0.55, 0.65, 0.6, 0.7, 0.65, 0.75, 0.7, 0.8],
    "historicalMemory": [
        209715200, 220200960, 214958080, 230686720, 220200960, 251658240, 230686720, 272629760, 251658240, 293601280
    ],
    "historicalGpu": [0.3, 0.35, 0.32, 0.38, 0.35, 0.4, 0.38, 0.42, 0.4, 0.45],
    "timeOfDay": 14,
    "dayOfWeek": 2,
    "currentCpu": 0.75,
    "currentMemory": 272629760,
    "currentGpu": 0.42,
}

THREAT: dict[str, Any] = {
    "agentId": "agent-7",
    "metrics": {"averageLatency": 120.0, "errorRate": 0.2, "resourceUsage": 0.9, "messageFrequency": 400.0},
    "anomalies": [{"type": "port_scan", "severity": "high"}, {"type": "burst", "severity": "low"}],
    "historicalThreats": [0.1, 0.2, 0.4],
    "timeSinceLastThreat": 5000.0,
}

FAILURE: dict[str, Any] = {
    "component": "disk-0",
    "healthScore": 0.4,
    "currentValue": 95.0,
    "baseline": 60.0,
    "trend": -0.6,
    "historicalHealth": [0.9 - 0.025 * i for i in range(20)],
    "failureHistory": [0, 0, 1, 0, 0, 0, 1, 0, 0, 0],
    "timeSinceLastFailure": 3_600_000.0,
}

MEMORY: dict[str, Any] = {
    "agentId": "agent-9",
    "accessHistory": [0.1 + 0.01 * i for i in range(20)],
    "accessTypes": [0, 1] * 10,
    "accessTimestamps": [1000.0 + 10 * i for i in range(20)],
    "currentAddress": 0.3,
    "localityScore": 0.8,
}

SAMPLES = {"workload": WORKLOAD, "threat": THREAT, "failure": FAILURE, "memory": MEMORY}
