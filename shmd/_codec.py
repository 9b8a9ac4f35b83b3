"""API fields (camelCase dicts, as in API.md) to payload records and back.

This module checks what the record format cannot carry: presence, types,
array lengths, string lengths, finiteness and what fits the field's width.
Fields are checked and converted item by item in Python, then numpy builds
the records from the converted tuples in one call (assigning field by field
into records was most of the cost).
Value ranges are the encoders' job (models.validate / the compiled path), so
each rule lives in one place; ``describe_invalid`` turns an encoder's verdict
back into the API field name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kernel_abi import (
    OUTPUT_NAMES,
    PAYLOADS,
    AccessType,
    FailureType,
    ModelId,
    RecommendedAction,
    Severity,
    Status,
    ThreatType,
    hash_str,
)

from ._errors import InternalError, InvalidFields

MAX_ID_LEN = 128
MAX_ANOMALIES = 64
_F32_MAX = float(np.finfo(np.float32).max)

MODEL_BY_NAME: dict[str, ModelId] = {m.name.lower(): m for m in ModelId}

# payload field -> API field, for the names that are not a plain camelCase.
_API_NAME: dict[ModelId, dict[str, str]] = {
    ModelId.WORKLOAD: {"agent_hash": "agentId"},
    ModelId.THREAT: {
        "agent_hash": "agentId",
        "average_latency": "metrics.averageLatency",
        "error_rate": "metrics.errorRate",
        "resource_usage": "metrics.resourceUsage",
        "message_frequency": "metrics.messageFrequency",
        "anomaly_count": "anomalies",
        "severity_counts": "anomalies",
        "distinct_anomaly_types": "anomalies",
    },
    ModelId.FAILURE: {"component_hash": "component"},
    ModelId.MEMORY: {"agent_hash": "agentId"},
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def api_field(model: ModelId, payload_field: str) -> str:
    """The API.md name of a payload field."""
    return _API_NAME[model].get(payload_field, _camel(payload_field))


def model_id(name: str) -> ModelId:
    """``"workload"`` -> ModelId.WORKLOAD; unknown names raise KeyError naming the choices."""
    try:
        return MODEL_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}: expected one of {', '.join(MODEL_BY_NAME)}") from None


# --- field readers: each raises InvalidFields naming the API field -----------


def _get(obj: Mapping[str, Any], key: str, path: str, default: Any = ...) -> Any:
    if key in obj and obj[key] is not None:
        return obj[key]
    if default is not ...:
        return default
    raise InvalidFields(path, "is required")


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFields(path, f"must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:  # an integer beyond any float
        raise InvalidFields(path, f"must be within ±{_F32_MAX:.3e} (float32)") from None
    if not math.isfinite(x):
        raise InvalidFields(path, "must be finite")
    if abs(x) > _F32_MAX:
        raise InvalidFields(path, f"must be within ±{_F32_MAX:.3e} (float32)")
    return x


def _integer(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFields(path, f"must be an integer, got {type(value).__name__}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise InvalidFields(path, "must be an integer")
    x = int(value)
    if not lo <= x <= hi:
        raise InvalidFields(path, f"must be an integer in [{lo}, {hi}], got {x}")
    return x


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LEN:
        raise InvalidFields(path, f"must be a string of 1..{MAX_ID_LEN} characters")
    try:
        value.encode("utf-8")  # strings travel as the hash of their UTF-8 bytes
    except UnicodeEncodeError:
        raise InvalidFields(path, "must be valid Unicode text (no lone surrogates)") from None
    return value


def _array(value: Any, path: str, length: int, *, pad: bool = False) -> list[Any]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise InvalidFields(path, f"must be an array of {length} numbers")
    if len(value) > length or (len(value) < length and not pad):
        rule = f"at most {length}" if pad else f"exactly {length}"
        raise InvalidFields(path, f"must have {rule} items, got {len(value)}")
    return list(value) + [0] * (length - len(value))


# The array readers check every item inline first (the common, valid case: no
# call per item) and only on a failure rerun the per-item readers, which name
# the offending item. NaN and +-inf fail the range comparison.


def _numbers(obj: Mapping[str, Any], key: str, length: int, *, pad: bool = False, default: Any = ...) -> list:
    raw = _array(_get(obj, key, key, default), key, length, pad=pad)
    for v in raw:
        kind = type(v)
        if (kind is not float and kind is not int) or not -_F32_MAX <= v <= _F32_MAX:
            return [_number(v, f"{key}[{i}]") for i, v in enumerate(raw)]
    return raw


def _integers(obj: Mapping[str, Any], key: str, length: int, lo: int, hi: int) -> list[int]:
    raw = _array(_get(obj, key, key), key, length)
    for v in raw:
        if type(v) is not int or not lo <= v <= hi:
            return [_integer(v, f"{key}[{i}]", lo, hi) for i, v in enumerate(raw)]
    return raw


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidFields(path, f"must be an object, got {type(value).__name__}")
    return value


_U64_MAX = 2**64 - 1


def _fill_workload(p: dict[str, Any], f: Mapping[str, Any]) -> None:
    p["agent_hash"] = hash_str(_string(_get(f, "agentId", "agentId"), "agentId"))
    p["historical_cpu"] = _numbers(f, "historicalCpu", 10)
    p["historical_memory"] = _integers(f, "historicalMemory", 10, 0, _U64_MAX)
    p["historical_gpu"] = _numbers(f, "historicalGpu", 10, default=[0.0] * 10)
    p["time_of_day"] = _integer(_get(f, "timeOfDay", "timeOfDay"), "timeOfDay", 0, 23)
    p["day_of_week"] = _integer(_get(f, "dayOfWeek", "dayOfWeek"), "dayOfWeek", 0, 6)
    p["current_cpu"] = _number(_get(f, "currentCpu", "currentCpu"), "currentCpu")
    p["current_memory"] = _integer(_get(f, "currentMemory", "currentMemory"), "currentMemory", 0, _U64_MAX)
    p["current_gpu"] = _number(_get(f, "currentGpu", "currentGpu", 0.0), "currentGpu")


_SEVERITY = {s.name.lower(): s for s in Severity}


def _fill_threat(p: dict[str, Any], f: Mapping[str, Any]) -> None:
    p["agent_hash"] = hash_str(_string(_get(f, "agentId", "agentId"), "agentId"))
    metrics = _mapping(_get(f, "metrics", "metrics"), "metrics")
    for key, field in (
        ("averageLatency", "average_latency"),
        ("errorRate", "error_rate"),
        ("resourceUsage", "resource_usage"),
        ("messageFrequency", "message_frequency"),
    ):
        p[field] = _number(_get(metrics, key, f"metrics.{key}"), f"metrics.{key}")
    anomalies = _get(f, "anomalies", "anomalies", [])
    if not isinstance(anomalies, Sequence) or isinstance(anomalies, str | bytes):
        raise InvalidFields("anomalies", "must be an array of {type, severity} objects")
    if len(anomalies) > MAX_ANOMALIES:
        raise InvalidFields("anomalies", f"must have at most {MAX_ANOMALIES} items, got {len(anomalies)}")
    counts = [0] * len(Severity)
    types = set()
    for i, item in enumerate(anomalies):
        item = _mapping(item, f"anomalies[{i}]")
        types.add(_string(_get(item, "type", f"anomalies[{i}].type"), f"anomalies[{i}].type"))
        severity = _get(item, "severity", f"anomalies[{i}].severity")
        if not isinstance(severity, str) or severity not in _SEVERITY:
            raise InvalidFields(f"anomalies[{i}].severity", f"must be one of {', '.join(_SEVERITY)}")
        counts[_SEVERITY[severity]] += 1
    p["anomaly_count"] = len(anomalies)
    p["severity_counts"] = counts
    p["distinct_anomaly_types"] = len(types)
    p["historical_threats"] = _numbers(f, "historicalThreats", 10, pad=True, default=[])
    p["time_since_last_threat"] = _number(_get(f, "timeSinceLastThreat", "timeSinceLastThreat"), "timeSinceLastThreat")


def _fill_failure(p: dict[str, Any], f: Mapping[str, Any]) -> None:
    p["component_hash"] = hash_str(_string(_get(f, "component", "component"), "component"))
    for key, field in (
        ("healthScore", "health_score"),
        ("currentValue", "current_value"),
        ("baseline", "baseline"),
        ("trend", "trend"),
        ("timeSinceLastFailure", "time_since_last_failure"),
    ):
        p[field] = _number(_get(f, key, key), key)
    p["historical_health"] = _numbers(f, "historicalHealth", 20)
    p["failure_history"] = _integers(f, "failureHistory", 10, 0, 1)


def _fill_memory(p: dict[str, Any], f: Mapping[str, Any]) -> None:
    p["agent_hash"] = hash_str(_string(_get(f, "agentId", "agentId"), "agentId"))
    p["access_history"] = _numbers(f, "accessHistory", 20)
    p["access_types"] = _integers(f, "accessTypes", 20, 0, len(AccessType) - 1)
    raw = _array(_get(f, "accessTimestamps", "accessTimestamps"), "accessTimestamps", 20)
    stamps = []
    for i, v in enumerate(raw):
        path = f"accessTimestamps[{i}]"
        try:
            ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(float(v))
        except OverflowError:
            ok = False
        if not ok:
            raise InvalidFields(path, "must be a finite number")
        stamps.append(float(v))  # f64 on the wire: no float32 bound
    p["access_timestamps"] = stamps
    p["current_address"] = _number(_get(f, "currentAddress", "currentAddress"), "currentAddress")
    p["locality_score"] = _number(_get(f, "localityScore", "localityScore"), "localityScore")


_FILL = {
    ModelId.WORKLOAD: _fill_workload,
    ModelId.THREAT: _fill_threat,
    ModelId.FAILURE: _fill_failure,
    ModelId.MEMORY: _fill_memory,
}


def payload_values(model: ModelId, fields: Any) -> dict[str, Any]:
    """API ``fields`` checked and converted: payload field name -> number or list of numbers."""
    values: dict[str, Any] = {}
    _FILL[model](values, _mapping(fields, "body"))
    return values


def values(model: ModelId, fields: Any) -> tuple:
    """API ``fields`` checked and converted, in the order of the payload struct's fields."""
    checked = payload_values(model, fields)
    return tuple(checked[name] for name in PAYLOADS[model].names)


def encode_payload(model: ModelId, fields: Any) -> np.ndarray:
    """API ``fields`` as a payload record of ``PAYLOADS[model]``."""
    return np.array(values(model, fields), PAYLOADS[model])


def encode_payloads(model: ModelId, items: Sequence[Any]) -> np.ndarray:
    """Many API field sets as an array of payload records, built by numpy in one go.

    An invalid item raises InvalidFields whose ``item`` is its index when
    there is more than one item.
    """
    rows = []
    for i, fields in enumerate(items):
        try:
            rows.append(values(model, fields))
        except InvalidFields as err:
            if len(items) > 1:
                err.item = i
            raise
    return np.array(rows, PAYLOADS[model])


def describe_invalid(model: ModelId, payload: np.ndarray, payload_field: str) -> InvalidFields | None:
    """The API-named error for a payload the encoder rejected at ``payload_field``.

    None when the encoders find nothing wrong with it there: then the rejection
    did not come from these encoders (a daemon of other code, or a lying one).
    """
    from models import validate  # deferred: the client needs it only on this error path

    for field, reason in validate(model, payload):
        if field == payload_field or not payload_field:
            return InvalidFields(api_field(model, field), reason)
    return None


_ENUM_OUTPUTS: dict[ModelId, dict[str, type]] = {
    ModelId.THREAT: {"threatType": ThreatType, "recommendedAction": RecommendedAction},
    ModelId.FAILURE: {"failureType": FailureType},
    ModelId.MEMORY: {"accessType": AccessType},
}
_BYTES_OUTPUTS = frozenset({"predictedMemory"})  # bytes: an integer below 2**63 (JSON encoders refuse wider)


def _enum_names(enum: type) -> tuple[str, ...]:
    members = sorted(enum, key=int)  # type: ignore[call-overload]
    assert [int(m) for m in members] == list(range(len(members))), f"{enum.__name__} is not 0..n-1"
    return tuple(m.name.lower() for m in members)


#: Per model, per output in order: (name, enum member names or None, is bytes). Looked up, not built, per call.
OUTPUT_SPECS: dict[ModelId, tuple[tuple[str, tuple[str, ...] | None, bool], ...]] = {
    m: tuple((n, _enum_names(_ENUM_OUTPUTS[m][n]) if n in _ENUM_OUTPUTS.get(m, {}) else None, n in _BYTES_OUTPUTS)
             for n in OUTPUT_NAMES[m])
    for m in ModelId
}  # fmt: skip


def decode_outputs(model: ModelId, outputs: Sequence[float]) -> dict[str, Any]:
    """A response's four outputs as the API's ``prediction`` object.

    Enum outputs come as integers with their names beside them
    (``threatType`` and ``threatTypeName``).
    The outputs come from another process: a value no model can produce
    (not finite, an enum out of range) raises InternalError naming it.
    """
    result: dict[str, Any] = {}
    for (name, names, is_bytes), value in zip(OUTPUT_SPECS[model], outputs, strict=True):
        value = float(value)
        if not math.isfinite(value):
            raise _bad_output(model, name, value)
        if names is not None:
            index = int(value)
            if not 0 <= index < len(names):
                raise _bad_output(model, name, value)
            result[name + "Name"] = names[index]
            result[name] = index
        elif is_bytes:
            if not 0 <= value < 2**63:
                raise _bad_output(model, name, value)
            result[name] = int(value)
        else:
            result[name] = value
    return result


def _bad_output(model: ModelId, name: str, value: float) -> InternalError:
    return InternalError(Status.INTERNAL, model, "", f"the daemon answered an impossible {name}={value!r}")
