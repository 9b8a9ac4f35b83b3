"""``/openapi.json``: an OpenAPI 3.1 document of every endpoint and schema.

Schemas follow ../shared/API.md. Tests validate real responses against
them, so a field added to a handler must be added here too.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from kernel_abi import AccessType, FailureType, RecommendedAction, Severity, ThreatType

MODELS = ("workload", "threat", "failure", "memory")


def _num(lo: float | None = None, hi: float | None = None, desc: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "number"}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    if desc:
        s["description"] = desc
    return s


def _int(lo: int | None = None, hi: int | None = None, desc: str = "") -> dict[str, Any]:
    s = _num(lo, hi, desc)
    s["type"] = "integer"
    return s


def _arr(item: dict[str, Any], n: int, *, pad: bool = False, desc: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "array", "items": item, "maxItems": n}
    if not pad:
        s["minItems"] = n
    if desc:
        s["description"] = desc
    return s


def _obj(props: dict[str, Any], required: list[str], desc: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if desc:
        s["description"] = desc
    return s


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: ``null`` means the same as leaving it out (its default)."""
    s = dict(schema)
    s["type"] = [s["type"], "null"]
    if "enum" in s:
        s["enum"] = [*s["enum"], None]
    return s


_UNIT = _num(0, 1)
# What the record can carry: float32 numbers, u64 integers, f64 timestamps (the shim refuses more with 400).
F32_MAX = 3.4028234663852886e38
F64_MAX = 1.7976931348623157e308
U64_MAX = 2**64 - 1
_ID = {"type": "string", "minLength": 1, "maxLength": 128}


def _enum_names(enum: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [e.name.lower() for e in enum]}


def _enum_doc(enum: Any) -> str:
    return ", ".join(f"{int(e)} = {e.name.lower()}" for e in enum)


REQUESTS: dict[str, dict[str, Any]] = {
    "workload": _obj(
        {
            "agentId": _ID,
            "historicalCpu": _arr(_UNIT, 10, desc="last 10 CPU utilisation samples, oldest first"),
            "historicalMemory": _arr(_int(0, U64_MAX), 10, desc="last 10 resident-memory samples, bytes"),
            "historicalGpu": _nullable(_arr(_UNIT, 10, desc="last 10 GPU utilisation samples (default zeros)")),
            "timeOfDay": _int(0, 23),
            "dayOfWeek": _int(0, 6),
            "currentCpu": _UNIT,
            "currentMemory": _int(0, U64_MAX),
            "currentGpu": _nullable(_num(0, 1, "default 0")),
        },
        ["agentId", "historicalCpu", "historicalMemory", "timeOfDay", "dayOfWeek", "currentCpu", "currentMemory"],
    ),
    "threat": _obj(
        {
            "agentId": _ID,
            "metrics": _obj(
                {
                    "averageLatency": _num(0, F32_MAX, desc="ms"),
                    "errorRate": _UNIT,
                    "resourceUsage": _UNIT,
                    "messageFrequency": _num(0, F32_MAX, desc="per second"),
                },
                ["averageLatency", "errorRate", "resourceUsage", "messageFrequency"],
            ),
            "anomalies": _nullable(
                {
                    "type": "array",
                    "maxItems": 64,
                    "items": _obj({"type": _ID, "severity": _enum_names(Severity)}, ["type", "severity"]),
                }
            ),
            "historicalThreats": _nullable(_arr(_UNIT, 10, pad=True, desc="last threat scores, padded with zeros")),
            "timeSinceLastThreat": _num(0, F32_MAX, desc="ms"),
        },
        ["agentId", "metrics", "timeSinceLastThreat"],
    ),
    "failure": _obj(
        {
            "component": _ID,
            "healthScore": _UNIT,
            "currentValue": _num(-F32_MAX, F32_MAX),
            "baseline": _num(-F32_MAX, F32_MAX),
            "trend": _num(-1, 1, "-1 degrading … 1 improving"),
            "historicalHealth": _arr(_UNIT, 20),
            "failureHistory": _arr(_int(0, 1), 10),
            "timeSinceLastFailure": _num(0, F32_MAX, desc="ms"),
        },
        [
            "component",
            "healthScore",
            "currentValue",
            "baseline",
            "trend",
            "historicalHealth",
            "failureHistory",
            "timeSinceLastFailure",
        ],
    ),
    "memory": _obj(
        {
            "agentId": _ID,
            "accessHistory": _arr(_UNIT, 20, desc="last 20 accessed addresses, normalised"),
            "accessTypes": _arr(_int(0, 2), 20, desc=_enum_doc(AccessType)),
            "accessTimestamps": _arr(_num(0, F64_MAX), 20),
            "currentAddress": _UNIT,
            "localityScore": _UNIT,
        },
        ["agentId", "accessHistory", "accessTypes", "accessTimestamps", "currentAddress", "localityScore"],
    ),
}

_CACHE_HIT = {"type": "boolean", "description": "served from the result cache"}

PREDICTIONS: dict[str, dict[str, Any]] = {
    "workload": _obj(
        {
            "predictedCpu": _UNIT,
            "predictedMemory": _int(0, desc="bytes"),
            "predictedGpu": _UNIT,
            "confidence": _UNIT,
            "cacheHit": _CACHE_HIT,
        },
        ["predictedCpu", "predictedMemory", "predictedGpu", "confidence", "cacheHit"],
    ),
    "threat": _obj(
        {
            "threatScore": _UNIT,
            "threatType": _int(0, 5, _enum_doc(ThreatType)),
            "threatTypeName": _enum_names(ThreatType),
            "confidence": _UNIT,
            "recommendedAction": _int(0, 4, _enum_doc(RecommendedAction)),
            "recommendedActionName": _enum_names(RecommendedAction),
            "cacheHit": _CACHE_HIT,
        },
        [
            "threatScore",
            "threatType",
            "threatTypeName",
            "confidence",
            "recommendedAction",
            "recommendedActionName",
            "cacheHit",
        ],
    ),
    "failure": _obj(
        {
            "failureProbability": _UNIT,
            "predictedTime": _num(-1, desc="ms until failure, -1 when none is expected"),
            "confidence": _UNIT,
            "failureType": _int(0, 5, _enum_doc(FailureType)),
            "failureTypeName": _enum_names(FailureType),
            "cacheHit": _CACHE_HIT,
        },
        ["failureProbability", "predictedTime", "confidence", "failureType", "failureTypeName", "cacheHit"],
    ),
    "memory": _obj(
        {
            "nextAddress": _UNIT,
            "accessProbability": _UNIT,
            "accessType": _int(0, 2, _enum_doc(AccessType)),
            "accessTypeName": _enum_names(AccessType),
            "confidence": _UNIT,
            "cacheHit": _CACHE_HIT,
        },
        ["nextAddress", "accessProbability", "accessType", "accessTypeName", "confidence", "cacheHit"],
    ),
}

for _p in PREDICTIONS.values():  # every answer says which version of the model computed it
    _p["properties"]["modelVersion"] = _int(1, 0xFFFF, "version of the model that answered (GET /api/ml/models)")
    _p["required"].append("modelVersion")

_LAT = {k: _num(0) for k in ("min", "avg", "max", "p50", "p95", "p99")}
_COUNT = _int(0)

COMPONENTS: dict[str, Any] = {
    "Error": _obj(
        {"success": {"const": False}, "error": {"type": "string", "description": "names the field and the rule"}},
        ["success", "error"],
    ),
    "ModelMetrics": _obj(
        {
            "modelName": {"type": "string", "enum": list(MODELS)},
            "modelVersion": _COUNT,
            "totalInferences": _int(0, desc="cache hits + model inferences"),
            "cacheHits": _COUNT,
            "cacheMisses": _COUNT,
            "cacheHitRate": _UNIT,
            "averageLatencyMs": _num(0),
            "minLatencyMs": _num(0),
            "maxLatencyMs": _num(0),
            "p50LatencyMs": _num(0),
            "p95LatencyMs": _num(0),
            "p99LatencyMs": _num(0),
            "requests": _COUNT,
            "modelInferences": _COUNT,
            "errors": _COUNT,
            "batches": _COUNT,
            "serviceLatencyMs": _obj(_LAT, list(_LAT), "drain-to-publish time inside the daemon"),
            "batchSizes": {"type": "object", "additionalProperties": _COUNT, "description": "by power of two"},
            "versions": {
                "type": "object",
                "description": "per model version (key: the version): its counters and end-to-end latency",
                "additionalProperties": _obj(
                    {k: _COUNT for k in ("requests", "modelInferences", "cacheHits", "errors")}
                    | {k: _num(0) for k in ("averageLatencyMs", "p50LatencyMs", "p99LatencyMs")},
                    ["requests", "modelInferences", "cacheHits", "errors", "averageLatencyMs", "p50LatencyMs",
                     "p99LatencyMs"],
                ),
            },
        },
        [
            "modelName",
            "totalInferences",
            "cacheHits",
            "cacheMisses",
            "averageLatencyMs",
            "minLatencyMs",
            "maxLatencyMs",
            "p50LatencyMs",
            "p95LatencyMs",
            "p99LatencyMs",
        ],
        "latency fields are end to end (caller's submit to response published), ms",
    ),
    "ChannelMetrics": _obj(
        {
            "submitted": _COUNT,
            "completed": _COUNT,
            "rejected": _COUNT,
            "rejectedByStatus": {"type": "object", "additionalProperties": _COUNT},
            "queueDepth": _COUNT,
            "corrupt": {"type": "boolean"},
        },
        ["submitted", "completed", "rejected", "rejectedByStatus", "queueDepth", "corrupt"],
    ),
    "CacheStats": _obj(
        {
            "hits": _COUNT,
            "misses": _COUNT,
            "hitRate": _UNIT,
            "inserts": _COUNT,
            "evictions": _COUNT,
            "entries": _COUNT,
            "capacity": _COUNT,
            "ttlMs": _num(0),
            "enabled": {"type": "boolean"},
            "adaptive": {"type": "boolean"},
            "refreshesStable": _COUNT,
            "refreshesDrifting": _COUNT,
        },
        ["hits", "misses", "hitRate", "inserts", "evictions", "entries", "capacity", "ttlMs", "enabled", "adaptive",
         "refreshesStable", "refreshesDrifting"],
    ),
    "Daemon": _obj(
        {
            "pid": _COUNT,
            "prefix": {"type": "string"},
            "backend": {"type": "string"},
            "models": {"type": "object", "additionalProperties": _COUNT},
            "passes": _COUNT,
            "heartbeatAgeMs": _num(-1),
            "heartbeatFresh": {"type": "boolean"},
            "started": {"type": "boolean", "description": "the start-up probe has been through every model and path"},
        },
        ["pid", "prefix", "backend", "models", "passes", "heartbeatAgeMs", "heartbeatFresh", "started"],
    ),
}
for _m in MODELS:
    COMPONENTS[f"{_m.capitalize()}Request"] = REQUESTS[_m]
    COMPONENTS[f"{_m.capitalize()}Prediction"] = PREDICTIONS[_m]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _by_model(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {m: _ref(name) for m in MODELS}, "required": list(MODELS)}


def _ok(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return _obj({"success": {"const": True}, **props}, ["success", *required])


COMPONENTS["MetricsResponse"] = _ok(
    {
        "metrics": _by_model("ModelMetrics"),
        "channels": {"type": "object", "additionalProperties": _ref("ChannelMetrics")},
        "cache": _by_model("CacheStats"),
        "daemon": _ref("Daemon"),
    },
    ["metrics", "channels", "cache", "daemon"],
)
COMPONENTS["ModelMetricsResponse"] = _ok({"metrics": _ref("ModelMetrics")}, ["metrics"])
COMPONENTS["CacheStatsResponse"] = _ok({"cache": _by_model("CacheStats")}, ["cache"])
COMPONENTS["MessageResponse"] = _ok({"message": {"type": "string"}}, ["message"])
COMPONENTS["ModelSelector"] = _obj(
    {"model": _nullable({"type": "string", "enum": list(MODELS)})},
    [],
    "omit the body or the model, or send null, for all models",
)
COMPONENTS["ModelSelector"]["type"] = ["object", "null"]
COMPONENTS["HealthResponse"] = _obj(
    {
        "success": {"type": "boolean", "description": "false while starting"},
        "status": {"type": "string", "enum": ["ok", "degraded", "starting"]},
        "service": {"type": "string"},
        "uptimeS": _num(0),
        "daemon": _ref("Daemon"),
    },
    ["success", "status", "daemon"],
)
COMPONENTS["ReadyResponse"] = _obj(
    {
        "success": {"type": "boolean"},
        "ready": {"type": "boolean"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "error": {"type": "string"},
        "models": {
            "type": "object",
            "description": "per model: ready once a validated, warmed version serves (it stays ready while loading "
            "another)",
            "additionalProperties": _obj(
                {
                    "ready": {"type": "boolean"},
                    "version": _COUNT,
                    "state": {"type": "string", "enum": ["absent", "serving", "loading"]},
                },
                ["ready", "version", "state"],
            ),
        },
    },
    ["success", "ready", "problems", "models"],
)

_JSON_AND_MSGPACK = ("application/json", "application/msgpack")
_METRICS_TYPES = ("text/plain", "application/openmetrics-text")


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {t: {"schema": schema} for t in _JSON_AND_MSGPACK}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": _content(_ref("Error"))}


_INPUT_ERRORS = {
    "400": _error("a field is missing or breaks its rule (the message names both), or the body is malformed"),
    "413": _error("body over 1 MiB, or a batch over 10,000 items"),
    "415": _error("Content-Type is neither application/json nor application/msgpack"),
    "503": _error("the daemon did not answer in time or shed the request"),
}
_AUTH = {"401": _error("an admin token is configured and the request lacks `Authorization: Bearer <token>`")}


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for m in MODELS:
        cap = m.capitalize()
        paths[f"/api/ml/predict/{m}"] = {
            "post": {
                "summary": f"One {m} prediction",
                "operationId": f"predict{cap}",
                "requestBody": {"required": True, "content": _content(_ref(f"{cap}Request"))},
                "responses": {
                    "200": {
                        "description": "the prediction and the measured handler time",
                        "content": _content(
                            _ok(
                                {"prediction": _ref(f"{cap}Prediction"), "latency_ms": _num(0)},
                                ["prediction", "latency_ms"],
                            )
                        ),
                    },
                    **_INPUT_ERRORS,
                },
            }
        }
        paths[f"/api/ml/predict/{m}/batch"] = {
            "post": {
                "summary": f"Many {m} predictions in one publish",
                "operationId": f"predict{cap}Batch",
                "requestBody": {
                    "required": True,
                    "content": _content(
                        _obj(
                            {"features": {"type": "array", "maxItems": 10_000, "items": _ref(f"{cap}Request")}},
                            ["features"],
                        )
                    ),
                },
                "responses": {
                    "200": {
                        "description": "predictions in request order",
                        "content": _content(
                            _ok(
                                {
                                    "predictions": {"type": "array", "items": _ref(f"{cap}Prediction")},
                                    "latency_ms": _num(0),
                                    "count": _COUNT,
                                },
                                ["predictions", "latency_ms", "count"],
                            )
                        ),
                    },
                    **_INPUT_ERRORS,
                },
            }
        }

    def get(op: str, summary: str, schema: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        responses = {"200": {"description": summary, "content": _content(_ref(schema))}, **(extra or {})}
        return {"get": {"summary": summary, "operationId": op, "responses": responses}}

    def admin(op: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "operationId": op,
                "security": [{}, {"adminToken": []}],
                "requestBody": {"required": False, "content": _content(_ref("ModelSelector"))},
                "responses": {
                    "200": {"description": "done", "content": _content(_ref("MessageResponse"))},
                    "404": _error("unknown model"),
                    **_INPUT_ERRORS,
                    **_AUTH,
                },
            }
        }

    paths["/api/ml/metrics"] = get("getMetrics", "metrics of every model, channel and cache", "MetricsResponse")
    paths["/api/ml/metrics/{model}"] = get(
        "getModelMetrics", "metrics of one model", "ModelMetricsResponse", {"404": _error("unknown model")}
    )
    paths["/api/ml/metrics/{model}"]["get"]["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "enum": list(MODELS)}}
    ]
    paths["/api/ml/metrics/reset"] = admin("resetMetrics", "zero the metrics of one model or all")
    paths["/api/ml/cache/stats"] = get("getCacheStats", "result cache statistics per model", "CacheStatsResponse")
    paths["/api/ml/cache/clear"] = admin("clearCache", "forget cached results of one model or all")
    starting = {"description": "the start-up probe is not through", "content": _content(_ref("HealthResponse"))}
    paths["/health"] = get("health", "the shim is up; the daemon's heartbeat", "HealthResponse", {"503": starting})
    paths["/ready"] = get(
        "ready",
        "models loaded, poll loop heartbeat < 1 s old, no corrupt channel",
        "ReadyResponse",
        {"503": {"description": "not ready", "content": _content(_ref("ReadyResponse"))}},
    )
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus text format; OpenMetrics when Accept asks for application/openmetrics-text",
            "operationId": "prometheus",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {t: {"schema": {"type": "string"}} for t in _METRICS_TYPES},
                }
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "this document",
            "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {}}}}},
        }
    }
    return paths


@functools.cache
def _document() -> dict[str, Any]:
    from . import _models_openapi  # it builds on this module's helpers

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shmd HTTP API",
            "version": "1.0.0",
            "description": "The seed's ML daemon API (port 9005), served by a client of the shmd daemon. "
            "JSON by default; msgpack when Content-Type/Accept say application/msgpack.",
        },
        "servers": [{"url": "http://127.0.0.1:9005"}],
        "paths": {**_paths(), **_models_openapi.PATHS},
        "components": {
            "schemas": {**COMPONENTS, **_models_openapi.SCHEMAS},
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_document())


__all__ = ["COMPONENTS", "MODELS", "PREDICTIONS", "REQUESTS", "openapi"]
