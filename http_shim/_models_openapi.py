"""The OpenAPI description of ``_models_api``'s endpoints (merged into ``/openapi.json`` by ``_openapi``)."""

from __future__ import annotations

from typing import Any

from ._openapi import _AUTH, _INPUT_ERRORS, MODELS, _content, _error, _int, _num, _obj, _ok, _ref

_VERSION = _int(1, 0xFFFF)

SCHEMAS: dict[str, Any] = {
    "ModelState": _obj(
        {
            "model": {"type": "string", "enum": list(MODELS)},
            "servingVersion": _int(0),
            "state": {"type": "string", "enum": ["absent", "serving", "loading"]},
            "loadingVersion": {"type": ["integer", "null"], "description": "the version being prepared, if any"},
            "ready": {"type": "boolean"},
            "policy": {"type": ["string", "integer"], "description": "\"latest\" or the pinned version"},
            "versionsOnDisk": {"type": "array", "items": _VERSION},
            "loadedAt": {"type": ["string", "null"], "description": "when the serving version was swapped in (UTC)"},
            "sha256": {"type": "object", "additionalProperties": {"type": "string"}, "description": "by file"},
            "heldoutMetrics": {"type": "object", "description": "the serving version's manifest's held-out metrics"},
            "lastLoad": _obj(
                {
                    "request": _int(0),
                    "result": {"type": "string", "enum": ["swapped", "refused", "not_found", "unchanged"]},
                    "reason": {"type": "string"},
                    "swapMs": _num(0, desc="load request to swap, ms"),
                },
                ["request", "result", "reason", "swapMs"],
            ),
        },
        ["model", "servingVersion", "state", "ready", "policy", "versionsOnDisk", "loadedAt", "sha256", "lastLoad"],
    ),
    "ModelsResponse": _ok({"models": {"type": "array", "items": _ref("ModelState")}}, ["models"]),
    "LoadRequest": _obj({"version": _VERSION}, ["version"]),
    "LoadResponse": _ok(
        {"model": {"type": "string"}, "version": _VERSION, "message": {"type": "string"}, "elapsedMs": _num(0)},
        ["model", "version", "message"],
    ),
}

PATHS: dict[str, Any] = {
    "/api/ml/models": {
        "get": {
            "summary": "per model: versions on disk, the version serving, its state, sha256 and held-out metrics",
            "operationId": "listModels",
            "responses": {"200": {"description": "the models", "content": _content(_ref("ModelsResponse"))}},
        }
    },
    "/api/ml/models/{model}/load": {
        "post": {
            "summary": "load, validate and warm a version beside the serving one, then swap between two passes",
            "operationId": "loadModel",
            "security": [{}, {"adminToken": []}],
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "enum": list(MODELS)}}
            ],
            "requestBody": {"required": True, "content": _content(_ref("LoadRequest"))},
            "responses": {
                "200": {"description": "the version now serving", "content": _content(_ref("LoadResponse"))},
                **_INPUT_ERRORS,
                "404": _error("unknown model, or no such version in the repository"),
                "409": _error("another load of the model came at the same time and won"),
                "422": _error("refused by validation (sha256, shapes, canaries); the old version keeps serving"),
                "504": _error("no outcome within the timeout"),
                **_AUTH,
            },
        }
    },
}
