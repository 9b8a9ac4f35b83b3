"""``GET /api/ml/models`` and ``POST /api/ml/models/{model}/load``: the model repository and hot loads.

A load is a request in the daemon's stats segment (``shmd._model_states``: version, then a
bumped sequence number); the daemon loads, validates and warms the version beside the
serving one and swaps between two passes, then writes the outcome. The handler waits for
it without blocking the event loop and answers with the version now serving, or with the
daemon's one-line reason: 404 no such version, 422 refused by validation (sha256, shapes,
canaries), 409 another load of the model won the race, 504 no outcome in time.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from kernel_abi import ModelId
from shmd import _model_report
from shmd import _model_states as ms

from ._codec import read_body, respond
from ._errors import HttpError

if TYPE_CHECKING:
    from ._app import Shim

LOAD_TIMEOUT_S = 120.0  # loading, validating and warming a version takes ~10 ms-10 s (tf backend, cold)
MAX_VERSION = 0xFFFF


def _model_id(request: web.Request) -> ModelId:
    name = request.match_info["model"]
    names = [m.name.lower() for m in ModelId]
    if name not in names:
        raise HttpError(404, f"model: unknown model {name!r}, expected one of {', '.join(sorted(names))}")
    return ModelId[name.upper()]


class ModelsApi:
    def __init__(self, shim: Shim) -> None:
        self.shim = shim

    async def list(self, request: web.Request) -> web.Response:
        return respond(request, {"success": True, "models": _model_report.models_report(self.shim._seg())})

    async def load(self, request: web.Request) -> web.Response:
        self.shim._authorize(request)
        mid = _model_id(request)
        body = await read_body(request)
        version = body.get("version") if isinstance(body, dict) else None
        if isinstance(version, float) and version.is_integer():  # JSON has one number type: 2.0 is 2
            version = int(version)
        if not (isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= MAX_VERSION):
            raise HttpError(400, f"version: is required and must be an integer in [1, {MAX_VERSION}], got {version!r}")
        seg = self.shim._seg()
        t0 = time.monotonic()
        seq = ms.request_load(seg.arrays, int(mid), version)
        if self.shim.client is not None:  # an idle daemon sees the request now, not after its sleep (~100 ms)
            self.shim.client.prewake()
        got = ms.outcome(seg.arrays, int(mid), seq)
        while got is None:
            if time.monotonic() - t0 > LOAD_TIMEOUT_S:
                raise HttpError(504, f"daemon did not finish loading {mid.name.lower()} version {version} "
                                f"within {LOAD_TIMEOUT_S:.0f} s; GET /api/ml/models shows its state")  # fmt: skip
            await asyncio.sleep(0.005)
            got = ms.outcome(seg.arrays, int(mid), seq)
        result, serving, reason = got
        if result == ms.RESULT_NOT_FOUND:
            raise HttpError(404, reason)
        if result == ms.RESULT_REFUSED:
            raise HttpError(422, f"version {version} refused, version {serving} still serving: {reason}")
        if serving != version:
            raise HttpError(409, f"another load of {mid.name.lower()} came at the same time: version {serving} serving")
        return respond(request, {
            "success": True, "model": mid.name.lower(), "version": serving, "message": reason,
            "elapsedMs": round((time.monotonic() - t0) * 1e3, 3),
        })  # fmt: skip


def register(app: web.Application, shim: Shim) -> None:
    api = ModelsApi(shim)
    app.router.add_get("/api/ml/models", api.list)
    app.router.add_post("/api/ml/models/{model}/load", api.load)
