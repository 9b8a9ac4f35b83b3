"""An independent reference for answers: valid API payloads (hypothesis) and what each should get back.

Written from /work/shared/API.md and docs/MODELS.md, not from shmd's codec or
``models.postprocess``: a bug there must show up as a difference here.

- ``payloads(model)``: valid API field sets, every optional field sometimes
  left out, strings up to the 128-character limit, up to 64 anomalies.
- ``Reference``: the in-process path for ONE payload — encode (the models'
  encoder, the only definition of the features), run the model on a one-row
  batch, then ``expected_outputs``, a plain-Python post-processing from the
  table in docs/MODELS.md.
- ``codec_problems(model, body)``: the API paths the client's codec must
  refuse (presence, types, lengths, finiteness, float32 width; API.md and
  shmd/_codec.py's docstring), and ``mutated(model)``: valid bodies with one
  field, nested field or array item replaced by a value at a limit or one
  past it, removed, or resized.
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


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


# --- an independent statement of what the codec accepts (API.md + the codec's docstring:
# presence, types, lengths, string lengths, finiteness, float32 width; value ranges are the
# encoders' business). Each field: (key, kind, arguments, required).
F32_MAX = float(np.finfo(np.float32).max)
U64 = 2**64 - 1
SCHEMA: dict[str, list[tuple[str, str, tuple, bool]]] = {
    "workload": [
        ("agentId", "string", (), True), ("historicalCpu", "numbers", (10, False), True),
        ("historicalMemory", "integers", (10, 0, U64), True), ("historicalGpu", "numbers", (10, False), False),
        ("timeOfDay", "integer", (0, 23), True), ("dayOfWeek", "integer", (0, 6), True),
        ("currentCpu", "number", (), True), ("currentMemory", "integer", (0, U64), True),
        ("currentGpu", "number", (), False),
    ],
    "threat": [
        ("agentId", "string", (), True), ("metrics", "metrics", (), True), ("anomalies", "anomalies", (), False),
        ("historicalThreats", "numbers", (10, True), False), ("timeSinceLastThreat", "number", (), True),
    ],
    "failure": [
        ("component", "string", (), True), ("healthScore", "number", (), True), ("currentValue", "number", (), True),
        ("baseline", "number", (), True), ("trend", "number", (), True),
        ("timeSinceLastFailure", "number", (), True), ("historicalHealth", "numbers", (20, False), True),
        ("failureHistory", "integers", (10, 0, 1), True),
    ],
    "memory": [
        ("agentId", "string", (), True), ("accessHistory", "numbers", (20, False), True),
        ("accessTypes", "integers", (20, 0, 2), True), ("accessTimestamps", "stamps", (20,), True),
        ("currentAddress", "number", (), True), ("localityScore", "number", (), True),
    ],
}  # fmt: skip
METRICS = ("averageLatency", "errorRate", "resourceUsage", "messageFrequency")
SEVERITIES = ("low", "medium", "high", "critical")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _number_ok(v: Any, width: float = F32_MAX) -> bool:
    if not _is_num(v):
        return False
    try:
        x = float(v)
    except OverflowError:  # an int past any float
        return False
    return math.isfinite(x) and abs(x) <= width


def _integer_ok(v: Any, lo: int, hi: int) -> bool:
    if not _is_num(v) or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer())):
        return False
    return lo <= int(v) <= hi


def _string_ok(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 128 and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in v)


def _array_problems(key: str, v: Any, n: int, pad: bool, item_ok: Any) -> list[str]:
    if not isinstance(v, list | tuple) or len(v) > n or (len(v) < n and not pad):
        return [key]
    return [f"{key}[{i}]" for i, x in enumerate(v) if not item_ok(x)]


def codec_problems(model: str, body: Any) -> list[str]:
    """The API paths the codec must refuse in ``body``; [] when it must accept it."""
    if not isinstance(body, dict):
        return ["body"]
    out: list[str] = []
    for key, kind, args, required in SCHEMA[model]:
        v = body.get(key)
        if v is None:
            out += [key] if required else []
        elif kind == "string":
            out += [] if _string_ok(v) else [key]
        elif kind == "number":
            out += [] if _number_ok(v) else [key]
        elif kind == "integer":
            out += [] if _integer_ok(v, *args) else [key]
        elif kind == "numbers":
            out += _array_problems(key, v, args[0], args[1], _number_ok)
        elif kind == "integers":
            out += _array_problems(key, v, args[0], False, lambda x, a=args: _integer_ok(x, a[1], a[2]))
        elif kind == "stamps":  # f64 on the wire: finite, no float32 bound
            out += _array_problems(key, v, args[0], False, lambda x: _number_ok(x, math.inf))
        elif kind == "metrics":
            if not isinstance(v, dict):
                out.append(key)
            else:
                out += [f"metrics.{m}" for m in METRICS if v.get(m) is None or not _number_ok(v[m])]
        elif kind == "anomalies":
            if not isinstance(v, list | tuple) or len(v) > 64:
                out.append(key)
                continue
            for i, a in enumerate(v):
                if not isinstance(a, dict):
                    out.append(f"anomalies[{i}]")
                    continue
                if a.get("type") is None or not _string_ok(a["type"]):
                    out.append(f"anomalies[{i}].type")
                if not isinstance(a.get("severity"), str) or a["severity"] not in SEVERITIES:
                    out.append(f"anomalies[{i}].severity")
    return out


# Values at every limit and one past it, and arbitrary JSON.
_EDGES = [
    True, False, None, 0, 1, -1, 2, 3, 6, 7, 23, 24, U64, U64 + 1, -(2**63), 10**400, 0.5, 3.0, 3.5, -0.0,
    F32_MAX, -F32_MAX, math.nextafter(F32_MAX, math.inf), int(F32_MAX), int(F32_MAX) * 2, 1e39, 1e308,
    math.nan, math.inf, -math.inf,
    "", "a", "x" * 128, "x" * 129, "a\udc80", "é∑", *SEVERITIES, "severe", [], {}, [0.5], {"type": "a"},
]  # fmt: skip
_value = st.sampled_from(_EDGES) | _json | st.lists(st.sampled_from(_EDGES), max_size=3)


def _paths(obj: Any, prefix: str = "") -> list[str]:
    """Every field, nested field and array item of a body."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        path = f"{prefix}[{key}]" if isinstance(obj, list) else f"{prefix}{'.' if prefix else ''}{key}"
        out.append(path)
        if isinstance(value, dict | list):
            out += _paths(value, path)
    return out


def _parent(body: Any, path: str) -> tuple[Any, Any]:
    """The container holding ``path`` and the key in it."""
    tokens = [int(t) if t.isdigit() else t for t in path.replace("[", ".").replace("]", "").split(".")]
    for t in tokens[:-1]:
        body = body[t]
    return body, tokens[-1]


@st.composite
def mutated(draw: st.DrawFn, model: str) -> Any:
    """A valid body with one field, nested field or array item replaced, removed or resized."""
    body = draw(payloads(model))
    if draw(st.integers(0, 30)) == 0:
        return draw(_value)  # not even an object
    path = draw(st.sampled_from(_paths(body)))
    parent, key = _parent(body, path)
    action = draw(st.sampled_from(("replace", "replace", "delete", "resize")))
    if action == "delete" and isinstance(parent, dict):
        del parent[key]
    elif action == "resize" and isinstance(parent[key], list):
        base = parent[key] or [draw(_value)]
        n = draw(st.sampled_from([0, len(base) - 1, len(base) + 1, 63, 64, 65]))
        parent[key] = (base * (n // len(base) + 1))[: max(n, 0)]
    else:
        parent[key] = draw(_value)
    return body


# --- the reference -----------------------------------------------------------------


def _clip01(x: float) -> float:
    return 0.0 if not x >= 0.0 else min(x, 1.0)  # NaN -> 0 (docs/MODELS.md)


def _unlog(x: float, scale: float, cap: float) -> float:
    try:
        v = math.expm1(min(x, 1e3) * scale)
    except OverflowError:
        v = math.inf  # capped below
    return 0.0 if not v >= 0.0 else min(v, cap)


def _argmax(values: np.ndarray) -> int:
    """The first largest value, scanning left to right (a comparison with NaN is false)."""
    best = 0
    for j in range(1, len(values)):
        if values[j] > values[best]:
            best = j
    return best


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


__all__ = [
    "MODELS", "OUTPUT_FIELDS", "Reference", "api_fields", "close", "codec_problems", "expected_outputs", "mixed_items",
    "mutated", "payloads",
]  # fmt: skip
