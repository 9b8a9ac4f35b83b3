"""Names, sizes and scales shared by the encoders, training, runners and post-processing.

No logic lives here beyond deriving 1-based field indices from the kernel_abi payload
dtypes, so a field's position is never written down twice.
"""

from __future__ import annotations

import math

from kernel_abi import PAYLOADS, ModelId

MODEL_NAMES: dict[ModelId, str] = {
    ModelId.WORKLOAD: "workload",
    ModelId.THREAT: "threat",
    ModelId.FAILURE: "failure",
    ModelId.MEMORY: "memory",
}
MODEL_IDS: dict[str, ModelId] = {name: mid for mid, name in MODEL_NAMES.items()}
#: Rows of arrays indexed by model id (row 0 unused).
N_MODEL_SLOTS = max(ModelId) + 1

#: Bumped whenever an encoder's output changes; a manifest trained with another
#: encoder version is refused at load time.
ENCODER_VERSION: dict[ModelId, int] = dict.fromkeys(MODEL_NAMES, 1)

N_FEATURES: dict[ModelId, int] = {
    ModelId.WORKLOAD: 38,
    ModelId.THREAT: 29,
    ModelId.FAILURE: 39,
    ModelId.MEMORY: 70,
}

# Raw network output columns, per model (the compiled artifact's one output tensor).
# workload: cpu, log-memory (MEM_LOG_SCALE units), gpu, confidence
# threat:   P(attack), type probs[6], action probs[5], confidence
# failure:  P(failure within horizon), log-time (TIME_LOG_SCALE units), type probs[6], confidence
# memory:   next address, P(that address), access-type probs[3], confidence
N_RAW_OUTPUTS: dict[ModelId, int] = {
    ModelId.WORKLOAD: 4,
    ModelId.THREAT: 13,
    ModelId.FAILURE: 9,
    ModelId.MEMORY: 6,
}

#: Names of the raw output columns, as written into each manifest.
RAW_COLUMNS: dict[ModelId, list[str]] = {
    ModelId.WORKLOAD: ["cpu", "log_memory", "gpu", "confidence"],
    ModelId.THREAT: [
        "p_attack",
        *[f"p_type{k}" for k in range(6)],
        *[f"p_action{k}" for k in range(5)],
        "confidence",
    ],
    ModelId.FAILURE: ["p_failure", "log_time", *[f"p_type{k}" for k in range(6)], "confidence"],
    ModelId.MEMORY: ["next_address", "p_address", "p_read", "p_write", "p_execute", "confidence"],
}

#: Memory in bytes is encoded as log1p(bytes) / MEM_LOG_SCALE: 1.0 is about 10 TB.
MEM_LOG_SCALE = 30.0
#: Latency (ms) and message frequency (per s) as log1p(x) / log1p(1e4).
RATE_LOG_SCALE = math.log1p(1e4)
#: Durations in ms (time since last threat/failure, predicted time) as log1p(ms) / 20.
TIME_LOG_SCALE = 20.0
#: Memory addresses live on a grid of 2**-16 "lines"; two addresses closer than half a
#: line are the same access (see docs/MODELS.md).
ADDR_LINE = 2.0**-16
ADDR_TOL = 2.0**-17
#: Failure model horizon: failureProbability is P(failure within this many ms).
FAILURE_HORIZON_MS = 60 * 60_000.0

INF = math.inf

#: Per-field valid ranges (inclusive) of numeric payload fields, from API.md. Every
#: float must also be finite. Fields not listed (the identifier hashes) are not checked.
RANGES: dict[ModelId, dict[str, tuple[float, float]]] = {
    ModelId.WORKLOAD: {
        "historical_cpu": (0.0, 1.0),
        "historical_memory": (0.0, INF),
        "historical_gpu": (0.0, 1.0),
        "current_cpu": (0.0, 1.0),
        "current_gpu": (0.0, 1.0),
        "current_memory": (0.0, INF),
        "time_of_day": (0.0, 23.0),
        "day_of_week": (0.0, 6.0),
    },
    ModelId.THREAT: {
        "average_latency": (0.0, INF),
        "error_rate": (0.0, 1.0),
        "resource_usage": (0.0, 1.0),
        "message_frequency": (0.0, INF),
        "historical_threats": (0.0, 1.0),
        "time_since_last_threat": (0.0, INF),
        "anomaly_count": (0.0, 64.0),
        "severity_counts": (0.0, 64.0),
        "distinct_anomaly_types": (0.0, 64.0),
    },
    ModelId.FAILURE: {
        "health_score": (0.0, 1.0),
        "current_value": (-INF, INF),
        "baseline": (-INF, INF),
        "trend": (-1.0, 1.0),
        "historical_health": (0.0, 1.0),
        "time_since_last_failure": (0.0, INF),
        "failure_history": (0.0, 1.0),
    },
    ModelId.MEMORY: {
        "access_history": (0.0, 1.0),
        "access_timestamps": (0.0, INF),
        "access_types": (0.0, 2.0),
        "current_address": (0.0, 1.0),
        "locality_score": (0.0, 1.0),
    },
}


def field_index(mid: ModelId, name: str) -> int:
    """1-based position of ``name`` in the model's payload struct (the ``error_field`` code)."""
    return PAYLOADS[mid].names.index(name) + 1
