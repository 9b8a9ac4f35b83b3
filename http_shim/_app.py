"""The aiohttp application: the seed's API, readiness, Prometheus and OpenAPI.

The shim is a client of the daemon like any kernel caller: predictions go
through its own channel (``ShimChannel``: the C client, one submission per
event-loop tick), metrics and cache figures are read
from the daemon's stats segment, and reset/clear are control commands the
daemon executes between passes. It never runs a model itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import weakref
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from kernel_abi import REQUEST, REQUESTS, RESPONSE, ModelId, Status
from shmd import _codec, _records, _snapshot, _wire
from shmd._errors import DaemonError, InvalidFields
from shmd._fastcodec import decode_batch, decode_item
from shmd._stats_segment import CMD_CLEAR_CACHE, CMD_RESET_METRICS, DONE, StatsSegment

from . import _models_api
from ._channel import ShimChannel
from ._codec import MAX_BODY, parse, read_body, read_raw, respond
from ._errors import HttpError, http_error
from ._openapi import openapi
from ._prometheus import registry_for

log = logging.getLogger("http_shim")

MAX_BATCH = 10_000
CONTROL_TIMEOUT_S = 2.0  # the daemon runs control commands within ~100 ms; this bounds the wait
MODELS = frozenset(_snapshot.MODEL_NAMES)


def _model(request: web.Request) -> str:
    name = request.match_info["model"]
    if name not in MODELS:
        raise HttpError(404, f"model: unknown model {name!r}, expected one of {', '.join(sorted(MODELS))}")
    return name


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1e3, 4)


def _allowed(request: web.Request, exc: web.HTTPMethodNotAllowed) -> str:
    """The methods of the path's own route; aiohttp also lists those of a ``{model}`` route the path
    happens to match (``/api/ml/metrics/reset`` matches ``GET /api/ml/metrics/{model}``)."""
    for resource in request.app.router.resources():
        if isinstance(resource, web.PlainResource) and resource.canonical == request.path:
            return ",".join(sorted({route.method for route in resource}))
    return exc.headers["Allow"]


def refusal(exc: Exception, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """The status and ``{"success": false, "error": ...}`` body for what a handler raised (5xx logged)."""
    status, message = http_error(exc)
    if status >= 500:
        log.error("request %s %s failed with %d", method, path, status, exc_info=exc)
    return status, {"success": False, "error": message}


@web.middleware
async def _error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal as ``{"success": false, "error": ...}``; statuses from ``http_error``."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        status, body = refusal(exc, request.method, request.path)
        resp = respond(request, body, status)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            resp.headers["Allow"] = _allowed(request, exc)  # RFC 9110: a 405 names the methods allowed
        return resp


class Shim:
    """State of one shim process: its channel client and the daemon's stats segment."""

    def __init__(self, prefix: str, channel: str, *, admin_token: str | None, timeout: float) -> None:
        self.prefix = prefix
        self.channel = channel
        self.admin_token = admin_token or None
        self.timeout = timeout
        self.client: ShimChannel | None = None
        self.stats: StatsSegment | None = None
        self._control_lock = asyncio.Lock()
        # The transports of the connections seen (a closed one leaves once freed): ``alone``.
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.started = time.time()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self, _app: web.Application) -> None:
        self.stats = StatsSegment.attach(self.prefix)
        self.client = ShimChannel(self.prefix, self.channel, timeout=self.timeout)
        self.registry = registry_for(self.stats)

    async def stop(self, _app: web.Application) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.stats is not None:
            self.stats.close()
            self.stats = None

    # --- predictions --------------------------------------------------------------------

    async def _predict(self, mid: ModelId, records: bytes, *, alone: bool = False) -> list[Any]:
        """The predictions for REQUEST ``records`` of model ``mid``, in order, with a DaemonError in
        place of each refused one (``alone``: see ``ShimChannel.exchange``)."""
        assert self.client is not None
        return self.answers(mid, records, await self.client.exchange(records, alone=alone))

    @staticmethod
    def answers(mid: ModelId, records: bytes, responses: bytes) -> list[Any]:
        """The predictions in RESPONSE ``responses`` to REQUEST ``records``, a DaemonError for each refused one."""
        if len(responses) > RESPONSE.itemsize:  # a batch: its answers column by column when all are plain
            answers = _records.columns(mid, np.frombuffer(responses, RESPONSE))
            if answers is not None:
                return answers
        results: list[Any] = []
        for i in range(len(records) // REQUEST.itemsize):
            status, flags, version, outputs = _wire.read(responses, i)
            if status == Status.OK:
                results.append(_records.prediction(mid, outputs, flags, version))
                continue
            resp = np.frombuffer(responses, RESPONSE, count=1, offset=i * RESPONSE.itemsize)[0]
            sent = np.frombuffer(records, REQUESTS[mid], count=1, offset=i * REQUEST.itemsize)[0]
            try:
                _records.read_response(mid, resp, payload=sent["payload"])  # raises the status's DaemonError
            except DaemonError as err:
                results.append(err)
        return results

    def alone(self, transport: asyncio.BaseTransport | None) -> bool:
        """Whether the connection is the only open one of this worker: then no other request
        can join its submission (HTTP/1.1 answers a connection's requests in turn)."""
        if transport is None:
            return False
        self._transports.add(transport)
        if len(self._transports) == 1:
            return True
        return not any(t is not transport and not t.is_closing() for t in self._transports)

    @staticmethod
    def single_records(mid: ModelId, raw: bytes) -> bytes | None:
        """The REQUEST record of a JSON body msgspec decodes; None for the general codec to judge."""
        values = decode_item(mid, raw)
        return _wire.PAYLOAD[mid].request(values) if values is not None else None

    @staticmethod
    def _records(mid: ModelId, items: list[Any]) -> bytes:
        """REQUEST records for API field sets, through the general codec (its errors name the field)."""
        return _records.requests_for(mid, _codec.encode_payloads(mid, items), submit_ns=0).tobytes()

    async def predict(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        assert self.client is not None
        self.client.prewake()  # the daemon's wake-up overlaps the parse below
        mid = _codec.model_id(_model(request))
        got = await read_raw(request)
        assert got is not None  # None only for an empty body with empty= given
        raw, kind = got
        records = self.single_records(mid, raw) if kind == "json" else None
        if records is None:
            fields = parse(raw, kind)
            try:
                records = self._records(mid, [fields])
            except (TypeError, ValueError, OverflowError) as err:
                # shmd._codec lets a few odd values through as plain errors (huge integers, unhashable
                # severities, lone surrogates): still the caller's input, so 400, not 500.
                if isinstance(err, InvalidFields):
                    raise
                raise HttpError(400, f"body: has a field of an unusable value ({type(err).__name__}: {err})") from None
        (prediction,) = await self._predict(mid, records, alone=self.alone(request.transport))
        if isinstance(prediction, DaemonError):
            raise prediction
        return respond(request, {"success": True, "prediction": prediction, "latency_ms": ms_since(t0)})

    async def predict_batch(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        model = _model(request)
        got = await read_raw(request)
        assert got is not None  # None only for an empty body with empty= given
        raw, kind = got
        mid = _codec.model_id(model)
        payloads = decode_batch(mid, raw) if kind == "json" else None
        if payloads is not None:  # a valid JSON batch, decoded straight into records
            if len(payloads) > MAX_BATCH:
                raise HttpError(413, f"features: must have at most {MAX_BATCH} items, got {len(payloads)}")
            records = _records.requests_for(mid, payloads, submit_ns=0).tobytes()
            return self._batch_answer(request, t0, await self._predict(mid, records))
        body = parse(raw, kind)
        if not isinstance(body, dict):
            raise HttpError(400, f"body: must be an object with a features array, got {type(body).__name__}")
        items = body.get("features")
        if not isinstance(items, list):
            raise HttpError(400, "features: is required and must be an array of objects")
        if len(items) > MAX_BATCH:
            raise HttpError(413, f"features: must have at most {MAX_BATCH} items, got {len(items)}")
        if not items:
            return respond(request, {"success": True, "predictions": [], "latency_ms": ms_since(t0), "count": 0})
        try:
            records = self._records(mid, items)
        except InvalidFields as err:
            raise HttpError(400, f"features[{err.item or 0}].{err.field}: {err.rule}") from None
        except (TypeError, ValueError, OverflowError) as err:
            raise HttpError(400, f"features: has an item with an unusable value ({type(err).__name__})") from None
        return self._batch_answer(request, t0, await self._predict(mid, records))  # one submission for the batch

    @staticmethod
    def _batch_answer(request: web.Request, t0: float, results: list[Any]) -> web.Response:
        for i, res in enumerate(results):
            if isinstance(res, DaemonError):
                status, message = http_error(res)
                raise HttpError(status, f"features[{i}]: {message}")
        return respond(
            request,
            {"success": True, "predictions": results, "latency_ms": ms_since(t0), "count": len(results)},
        )

    # --- metrics and cache ----------------------------------------------------------------

    def _seg(self) -> StatsSegment:
        assert self.stats is not None
        return self.stats

    async def metrics(self, request: web.Request) -> web.Response:
        snap = _snapshot.snapshot(self._seg())
        return respond(
            request,
            {
                "success": True,
                "metrics": snap["models"],
                "channels": snap["channels"],
                "cache": snap["cache"],
                "daemon": snap["daemon"],
            },
        )

    async def model_metrics(self, request: web.Request) -> web.Response:
        model = _model(request)
        return respond(request, {"success": True, "metrics": _snapshot.model_snapshot(self._seg(), model)})

    def _authorize(self, request: web.Request) -> None:
        if self.admin_token is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
            raise HttpError(401, "Authorization: must be 'Bearer <admin token>' for this endpoint")

    async def _optional_model(self, request: web.Request) -> tuple[str | None, int]:
        body = await read_body(request, empty={})
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise HttpError(400, f"body: must be an object, got {type(body).__name__}")
        model = body.get("model")
        if model is None:
            return None, 0
        if not isinstance(model, str):
            raise HttpError(400, f"model: must be a string, got {type(model).__name__}")
        if model not in MODELS:
            raise HttpError(404, f"model: unknown model {model!r}, expected one of {', '.join(sorted(MODELS))}")
        return model, _snapshot.MODEL_NAMES.index(model) + 1

    async def _control(self, command: int, argument: int) -> None:
        seg = self._seg()
        async with self._control_lock:
            seq = seg.command(command, argument)
            deadline = time.monotonic() + CONTROL_TIMEOUT_S
            while int(seg.arrays["control"][DONE]) < seq:
                if time.monotonic() > deadline:
                    raise HttpError(503, f"daemon did not run the command within {CONTROL_TIMEOUT_S}s")
                await asyncio.sleep(0.005)

    async def reset_metrics(self, request: web.Request) -> web.Response:
        self._authorize(request)
        model, mid = await self._optional_model(request)
        await self._control(CMD_RESET_METRICS, mid)
        return respond(request, {"success": True, "message": f"metrics reset for {model or 'all models'}"})

    async def cache_stats(self, request: web.Request) -> web.Response:
        return respond(request, {"success": True, "cache": _snapshot.cache_snapshot(self._seg())})

    async def cache_clear(self, request: web.Request) -> web.Response:
        self._authorize(request)
        model, mid = await self._optional_model(request)
        await self._control(CMD_CLEAR_CACHE, mid)
        return respond(request, {"success": True, "message": f"cache cleared for {model or 'all models'}"})

    # --- service -------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        daemon = _snapshot.daemon_snapshot(self._seg())
        # 503 "starting" until the daemon's readiness probe has been through every path (event=ready)
        status = "degraded" if not daemon["heartbeatFresh"] else "ok" if daemon["started"] else "starting"
        return respond(
            request,
            {
                "success": status != "starting",
                "status": status,
                "service": "shmd",
                "uptimeS": round(time.time() - self.started, 3),
                "daemon": daemon,
            },
            503 if status == "starting" else 200,
        )

    async def ready(self, request: web.Request) -> web.Response:
        ok, problems, per_model = _snapshot.readiness(self._seg())
        body = {"success": ok, "ready": ok, "problems": problems, "models": per_model}
        if not ok:
            body["error"] = "; ".join(problems)
        return respond(request, body, 200 if ok else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        # The Prometheus text format, or OpenMetrics when Accept asks for application/openmetrics-text.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        resp = web.Response(body=encode(self.registry))
        resp.headers["Content-Type"] = content_type
        return resp

    async def openapi(self, request: web.Request) -> web.Response:
        return respond(request, openapi())


SHIM = web.AppKey("shim", Shim)


def create_app(
    prefix: str, channel: str = "http", *, admin_token: str | None = None, timeout: float = 5.0
) -> web.Application:
    """The shim's application, attaching to ``channel`` of the daemon serving ``prefix`` at startup."""
    shim = Shim(prefix, channel, admin_token=admin_token, timeout=timeout)
    app = web.Application(middlewares=[_error_middleware], client_max_size=MAX_BODY)
    app[SHIM] = shim
    app.on_startup.append(shim.start)
    app.on_cleanup.append(shim.stop)
    r = app.router
    r.add_post("/api/ml/predict/{model}", shim.predict)
    r.add_post("/api/ml/predict/{model}/batch", shim.predict_batch)
    r.add_get("/api/ml/metrics", shim.metrics)
    r.add_post("/api/ml/metrics/reset", shim.reset_metrics)
    # Not "reset": that path is POST only, and a GET of it is 405 (Allow: POST), not an unknown model.
    r.add_get("/api/ml/metrics/{model:(?!reset$)[^{}/]+}", shim.model_metrics)
    r.add_get("/api/ml/cache/stats", shim.cache_stats)
    r.add_post("/api/ml/cache/clear", shim.cache_clear)
    r.add_get("/health", shim.health)
    r.add_get("/ready", shim.ready)
    r.add_get("/metrics", shim.prometheus)
    r.add_get("/openapi.json", shim.openapi)
    _models_api.register(app, shim)
    return app


__all__ = ["MAX_BATCH", "MODELS", "SHIM", "Shim", "create_app", "ms_since", "refusal"]
