"""An independent reference for answers: valid API payloads (hypothesis) and what each should get back.

Written from /work/shared/API.md and docs/MODELS.md, not from shmd's codec or
``models.postprocess``: a bug there must show up as a difference here.

- ``payloads(model)``: valid API field sets, every optional field sometimes
  left out, strings up to the 128-character limit, up to 64 anomalies.
- ``Reference``: the in-process path for ONE payload — encode (the models'
  encoder, the only definition of the features), run the model on a one-row
  batch, then ``expected_outputs``, a plain-Python post-processing from the
  table in docs/MODELS.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

import models
from shmd._codec import encode_payload, model_id

MODELS = ("workload", "threat", "failure", "memory")
#: API.md's response fields, in the order of the response record's four outputs.
OUTPUT_FIELDS = {
    "workload": ("predictedCpu", "predictedMemory", "predictedGpu", "confidence"),
    "threat": ("threatScore", "threatType", "confidence", "recommendedAction"),
    "failure": ("failureProbability", "predictedTime", "confidence", "failureType"),
    "memory": ("nextAddress", "accessProbability", "accessType", "confidence"),
}
#: Fields the API returns as integers (bytes, enum values): int() of the output.
INTEGER_FIELDS = frozenset({"predictedMemory", "threatType", "recommendedAction", "failureType", "accessType"})
REL = 1e-6  # the tolerance: the daemon's answer equals the reference within 1e-6

_F32_MAX = float(np.finfo(np.float32).max)
unit = st.floats(0.0, 1.0) | st.sampled_from([0, 1])  # integers are numbers too
nonneg = st.floats(0.0, 1e12) | st.integers(0, 10**6) | st.just(_F32_MAX)
anyf32 = st.floats(-1e12, 1e12) | st.integers(-(10**6), 10**6)
text = st.text(min_size=1, max_size=128) | st.text(min_size=128, max_size=128)
u64 = st.integers(0, 2**64 - 1)


def _fixed(elem: st.SearchStrategy, n: int) -> st.SearchStrategy[list]:
    return st.lists(elem, min_size=n, max_size=n)


def _optional(d: dict[str, Any], draw: st.DrawFn, key: str, strategy: st.SearchStrategy) -> None:
    if draw(st.booleans()):
        d[key] = draw(strategy)


@st.composite
def payloads(draw: st.DrawFn, model: str) -> dict[str, Any]:
    """One valid API field set for ``model``."""
    if model == "workload":
        d = {
            "agentId": draw(text), "historicalCpu": draw(_fixed(unit, 10)),
            "historicalMemory": draw(_fixed(u64, 10)), "timeOfDay": draw(st.integers(0, 23)),
            "dayOfWeek": draw(st.integers(0, 6)), "currentCpu": draw(unit), "currentMemory": draw(u64),
        }  # fmt: skip
        _optional(d, draw, "historicalGpu", _fixed(unit, 10))
        _optional(d, draw, "currentGpu", unit)
    elif model == "threat":
        severity = st.sampled_from(["low", "medium", "high", "critical"])
        anomaly = st.fixed_dictionaries({"type": st.sampled_from(["port_scan", "dos", "x" * 128]) | text,
                                         "severity": severity})  # fmt: skip
        d = {
            "agentId": draw(text),
            "metrics": {"averageLatency": draw(nonneg), "errorRate": draw(unit), "resourceUsage": draw(unit),
                        "messageFrequency": draw(nonneg)},
            "timeSinceLastThreat": draw(nonneg),
        }
        _optional(d, draw, "anomalies", st.lists(anomaly, max_size=8) | _fixed(anomaly, 64))
        _optional(d, draw, "historicalThreats", st.lists(unit, max_size=10))
    elif model == "failure":
        d = {
            "component": draw(text), "healthScore": draw(unit), "currentValue": draw(anyf32),
            "baseline": draw(anyf32), "trend": draw(st.floats(-1.0, 1.0)),
            "historicalHealth": draw(_fixed(unit, 20)), "failureHistory": draw(_fixed(st.integers(0, 1), 10)),
            "timeSinceLastFailure": draw(nonneg),
        }  # fmt: skip
    else:
        d = {
            "agentId": draw(text), "accessHistory": draw(_fixed(unit, 20)),
            "accessTypes": draw(_fixed(st.integers(0, 2), 20)),
            "accessTimestamps": draw(_fixed(st.floats(0.0, 1e300) | st.integers(0, 10**9), 20)),
            "currentAddress": draw(unit), "localityScore": draw(unit),
        }  # fmt: skip
    return d


@st.composite
def mixed_items(draw: st.DrawFn, min_size: int = 1, max_size: int = 24) -> list[tuple[str, dict[str, Any]]]:
    """(model, fields) pairs of several models, in a drawn order."""
    n = draw(st.integers(min_size, max_size))
    return [(m, draw(payloads(m))) for m in draw(_fixed(st.sampled_from(MODELS), n))]


# --- the reference -----------------------------------------------------------------


def _clip01(x: float) -> float:
    return 0.0 if not x >= 0.0 else min(x, 1.0)  # NaN -> 0 (docs/MODELS.md)


def _unlog(x: float, scale: float, cap: float) -> float:
    v = math.expm1(min(x, 1e3) * scale)
    return 0.0 if not v >= 0.0 else min(v, cap)


def _argmax(values: np.ndarray) -> int:
    return int(np.argmax(values))  # first maximum, like any argmax


def expected_outputs(model: str, raw: np.ndarray) -> np.ndarray:
    """The four API outputs for one row of raw model outputs (docs/MODELS.md, 'Raw outputs')."""
    r = [float(x) for x in raw]
    if model == "workload":  # cpu, log-memory (/30), gpu, confidence
        out = [_clip01(r[0]), _unlog(r[1], 30.0, 2.0**60), _clip01(r[2]), _clip01(r[3])]
    elif model == "threat":  # P(attack), type probs[6] (0 = none), action probs[5], confidence
        score = _clip01(r[0])
        kind = 0 if score < 0.5 else 1 + _argmax(raw[2:7])
        out = [score, kind, _clip01(r[12]), _argmax(raw[7:12])]
    elif model == "failure":  # P(failure), log-time (/20), type probs[6] (0 = none), confidence
        p = _clip01(r[0])
        time_ms, kind = (-1.0, 0) if p < 0.5 else (_unlog(r[1], 20.0, 1e12), 1 + _argmax(raw[3:8]))
        out = [p, time_ms, _clip01(r[8]), kind]
    else:  # next address, P(that address), type probs[3], confidence
        out = [_clip01(r[0]), _clip01(r[1]), _argmax(raw[2:5]), _clip01(r[5])]
    return np.array(out, np.float64)


class Reference:
    """Encode -> model (one-row batch) -> ``expected_outputs``, in this process."""

    def __init__(self) -> None:
        self.runners = {m: models.load_runner(model_id(m)) for m in MODELS}

    def outputs(self, model: str, fields: dict[str, Any]) -> np.ndarray:
        mid = model_id(model)
        payload = encode_payload(mid, fields).reshape(1)
        features, err = models.encode_batch(mid, payload)
        assert err[0] == 0, f"the generator made an invalid {model} payload (field {err[0]}): {fields}"
        raw = self.runners[model].predict(features)[0]
        return expected_outputs(model, raw)


def api_fields(model: str, outputs: np.ndarray) -> dict[str, float]:
    """Four outputs as API.md's prediction fields (numbers only; names of enums not included)."""
    return {name: int(v) if name in INTEGER_FIELDS else v
            for name, v in zip(OUTPUT_FIELDS[model], outputs.tolist(), strict=True)}  # fmt: skip


def close(got: np.ndarray | list[float], want: np.ndarray | list[float]) -> bool:
    return bool(np.allclose(np.asarray(got, np.float64), want, rtol=REL, atol=REL, equal_nan=False))


__all__ = ["MODELS", "OUTPUT_FIELDS", "Reference", "api_fields", "close", "expected_outputs", "mixed_items", "payloads"]
