"""API fields to payload records: every malformed value is an InvalidFields naming its field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_abi import PAYLOADS, ModelId, hash_str
from shmd import InvalidFields
from shmd._codec import decode_outputs, encode_payload, model_id
from shmd.samples import SAMPLES

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
    from ._oracle import payloads

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


@pytest.mark.parametrize("model", list(SAMPLES))
def test_samples_encode(model: str) -> None:
    payload = encode_payload(model_id(model), SAMPLES[model])
    assert payload.dtype == PAYLOADS[model_id(model)]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(list(SAMPLES)), st.data())
def test_codec_accepts_exactly_the_valid_bodies(model: str, data: st.DataObject) -> None:
    """Acceptance <=> validity, both ways: garbage accepted fails as surely as a valid body refused."""
    body = data.draw(mutated(model))
    want = codec_problems(model, body)
    try:
        encode_payload(model_id(model), body)
    except InvalidFields as err:
        assert want, f"refused a valid {model} body: {err}"
        assert err.field in want, f"refused {err.field!r} but the problem is {want}: {err}"
    else:
        assert not want, f"accepted an invalid {model} body: {want}"


def test_specific_refusals_name_field_and_rule() -> None:
    w = dict(SAMPLES["workload"])
    with pytest.raises(InvalidFields, match=r"^currentCpu: must be within ±3\.403e\+38 \(float32\)$"):
        encode_payload(ModelId.WORKLOAD, dict(w, currentCpu=10**400))
    with pytest.raises(InvalidFields, match=r"^agentId: must be valid Unicode text"):
        encode_payload(ModelId.WORKLOAD, dict(w, agentId="a\udc80"))
    with pytest.raises(InvalidFields, match=r"^anomalies\[0\]\.severity: must be one of low, medium, high, critical$"):
        encode_payload(ModelId.THREAT, dict(SAMPLES["threat"], anomalies=[{"type": "x", "severity": ["high"]}]))
    with pytest.raises(InvalidFields, match=r"^historicalGpu\[2\]: must be finite$"):
        encode_payload(ModelId.WORKLOAD, dict(w, historicalGpu=[0, 0, float("nan")] + [0] * 7))


def test_optional_fields_default_and_strings_travel_as_hashes() -> None:
    w = {k: v for k, v in SAMPLES["workload"].items() if k not in ("historicalGpu", "currentGpu")}
    p = encode_payload(ModelId.WORKLOAD, w)
    assert p["current_gpu"] == 0 and not p["historical_gpu"].any()
    assert p["agent_hash"] == hash_str("agent-123")
    t = encode_payload(ModelId.THREAT, dict(SAMPLES["threat"], historicalThreats=[0.5]))
    assert list(t["historical_threats"]) == pytest.approx([0.5] + [0] * 9)
    assert list(t["severity_counts"]) == [1, 0, 1, 0] and t["distinct_anomaly_types"] == 2


def test_outputs_decode_with_enum_names() -> None:
    assert decode_outputs(ModelId.THREAT, [0.9, 3, 0.8, 2]) == {
        "threatScore": 0.9, "threatType": 3, "threatTypeName": "denial_of_service", "confidence": 0.8,
        "recommendedAction": 2, "recommendedActionName": "throttle",
    }  # fmt: skip
    assert decode_outputs(ModelId.WORKLOAD, [0.5, 1234.0, 0.1, 0.9])["predictedMemory"] == 1234
