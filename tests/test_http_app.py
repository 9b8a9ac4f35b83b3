"""The shim's handlers through aiohttp's test client, over a real daemon (``--no-http``).

Every endpoint answers with the documented envelope and validates against
/openapi.json; every refusal is the error envelope with the documented status.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from http_shim import MAX_BATCH, MAX_BODY, create_app, openapi
from http_shim._prometheus import LATENCY_BOUNDS_S, latency_buckets
from shmd import _metrics as met
from shmd import _metrics_compiled as met_jit

from ._http_daemon import MODELS, Daemon, unique_prefix, valid

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Shim:
    """A test client bound to one event loop kept for the whole module."""

    def __init__(self, prefix: str, admin_token: str | None = TOKEN) -> None:
        self.loop = asyncio.new_event_loop()
        app = create_app(prefix, "shim", admin_token=admin_token, timeout=5.0)
        self.client = TestClient(TestServer(app, host="127.0.0.1"), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def call(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        async def go() -> tuple[int, dict[str, str], bytes]:
            async with self.client.request(method, path, **kw) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        return self.loop.run_until_complete(asyncio.wait_for(go(), 30))

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.call(method, path, **kw)
        return status, json.loads(body)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("app"))
    yield d
    assert not d.stop(), "daemon left shared memory behind"


@pytest.fixture(scope="module")
def shim(daemon: Daemon) -> Iterator[Shim]:
    s = Shim(daemon.prefix)
    yield s
    s.close()


# --- a minimal JSON Schema check for the subset _openapi uses --------------------------------

DOC = openapi()


def check(instance: Any, schema: dict[str, Any], path: str = "$") -> None:
    if "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "const" in schema:
        assert instance == schema["const"], f"{path}: {instance!r} != {schema['const']!r}"
    if "enum" in schema:
        assert instance in schema["enum"], f"{path}: {instance!r} not in {schema['enum']}"
    t = schema.get("type")
    if t == "object":
        assert isinstance(instance, dict), f"{path}: not an object"
        for key in schema.get("required", []):
            assert key in instance, f"{path}: missing {key}"
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                check(value, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                check(value, schema["additionalProperties"], f"{path}.{key}")
    elif t == "array":
        assert isinstance(instance, list), f"{path}: not an array"
        assert len(instance) <= schema.get("maxItems", len(instance))
        for i, item in enumerate(instance):
            check(item, schema.get("items", {}), f"{path}[{i}]")
    elif t in ("number", "integer"):
        assert isinstance(instance, int | float) and not isinstance(instance, bool), f"{path}: {instance!r}"
        if t == "integer":
            assert isinstance(instance, int), f"{path}: {instance!r} is not an integer"
        assert instance >= schema.get("minimum", -np.inf), f"{path}: {instance} < minimum"
        assert instance <= schema.get("maximum", np.inf), f"{path}: {instance} > maximum"
    elif t == "string":
        assert isinstance(instance, str), f"{path}: not a string"
    elif t == "boolean":
        assert isinstance(instance, bool), f"{path}: not a boolean"


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    op = DOC["paths"][path][method]
    return op["responses"][str(status)]["content"]["application/json"]["schema"]


# --- predictions ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_single_prediction_matches_schema_and_measures_latency(shim: Shim, model: str) -> None:
    t0 = time.perf_counter()
    status, body = shim.json("POST", f"/api/ml/predict/{model}", json=valid(model))
    wall_ms = (time.perf_counter() - t0) * 1e3
    assert status == 200, body
    check(body, response_schema(f"/api/ml/predict/{model}", "post", 200))
    assert 0 < body["latency_ms"] <= wall_ms


@pytest.mark.parametrize("model", MODELS)
def test_batch_is_one_publish_and_matches_schema(shim: Shim, daemon: Daemon, model: str) -> None:
    items = [valid(model, 1000 + i) for i in range(100)]
    _, before = shim.json("GET", "/api/ml/metrics")
    status, body = shim.json("POST", f"/api/ml/predict/{model}/batch", json={"features": items})
    assert status == 200, body
    check(body, response_schema(f"/api/ml/predict/{model}/batch", "post", 200))
    assert body["count"] == 100 == len(body["predictions"])
    _, after = shim.json("GET", "/api/ml/metrics")
    done = after["channels"]["shim"]["submitted"] - before["channels"]["shim"]["submitted"]
    assert done == 100
    # One publish: the daemon found all 100 at once, so a handful of model calls, not 100.
    batches = after["metrics"][model]["batches"] - before["metrics"][model]["batches"]
    assert 1 <= batches <= 4


def test_same_features_twice_hit_the_cache(shim: Shim) -> None:
    body = valid("failure", 424242)  # failure's TTL is 1 s: the second call is inside it
    first = shim.json("POST", "/api/ml/predict/failure", json=body)[1]["prediction"]
    second = shim.json("POST", "/api/ml/predict/failure", json=body)[1]["prediction"]
    assert not first["cacheHit"] and second["cacheHit"]
    assert first["failureProbability"] == second["failureProbability"]


def test_msgpack_in_and_out(shim: Shim) -> None:
    status, headers, raw = shim.call(
        "POST",
        "/api/ml/predict/memory",
        data=msgpack.packb(valid("memory")),
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert status == 200 and headers["Content-Type"].startswith("application/msgpack")
    body = msgpack.unpackb(raw)
    check(body, response_schema("/api/ml/predict/memory", "post", 200))
    status, headers, raw = shim.call(
        "POST", "/api/ml/predict/memory", data=b"\xc1", headers={"Content-Type": "application/msgpack",
                                                                   "Accept": "application/msgpack"},
    )  # fmt: skip
    assert status == 400 and msgpack.unpackb(raw)["success"] is False


# --- refusals ------------------------------------------------------------------------------


def _error(shim: Shim, method: str, path: str, **kw: Any) -> tuple[int, str]:
    status, body = shim.json(method, path, **kw)
    check(body, DOC["components"]["schemas"]["Error"])
    return status, body["error"]


@pytest.mark.parametrize(
    ("model", "mutate", "pattern"),
    [
        ("workload", lambda b: b.pop("historicalCpu"), r"^historicalCpu: is required$"),
        ("workload", lambda b: b.update(historicalCpu=[0.5] * 9), r"^historicalCpu: must have exactly 10 items"),
        ("workload", lambda b: b.update(timeOfDay=24), r"^timeOfDay: must be an integer in \[0, 23\]"),
        ("workload", lambda b: b.update(currentCpu=1.5), r"currentCpu.*range"),
        ("workload", lambda b: b.update(agentId=""), r"^agentId: must be a string"),
        ("threat", lambda b: b["metrics"].update(errorRate="x"), r"^metrics\.errorRate: must be a number"),
        ("threat", lambda b: b.update(anomalies=[{"type": "a", "severity": "huge"}]), r"anomalies\[0\]\.severity"),
        ("failure", lambda b: b.update(failureHistory=[2] * 10), r"^failureHistory\[0\]: must be an integer in"),
        ("memory", lambda b: b.update(accessTypes=[3] * 20), r"^accessTypes\[0\]: must be an integer in \[0, 2\]"),
    ],
)
def test_bad_field_is_400_naming_field_and_rule(shim: Shim, model: str, mutate: Any, pattern: str) -> None:
    body = valid(model)
    mutate(body)
    status, message = _error(shim, "POST", f"/api/ml/predict/{model}", json=body)
    assert status == 400
    assert re.search(pattern, message), message


def test_bad_batch_item_is_named_by_index(shim: Shim) -> None:
    items = [valid("threat", i) for i in range(5)]
    items[3]["metrics"]["errorRate"] = 7
    status, message = _error(shim, "POST", "/api/ml/predict/threat/batch", json={"features": items})
    assert status == 400 and message.startswith("features[3]") and "errorRate" in message
    items[3] = {"agentId": "x"}
    status, message = _error(shim, "POST", "/api/ml/predict/threat/batch", json={"features": items})
    assert (status, message) == (400, "features[3].metrics: is required")


@pytest.mark.parametrize(
    ("method", "path", "kw", "expected"),
    [
        ("POST", "/api/ml/predict/nosuch", {"json": {}}, 404),
        ("POST", "/api/ml/predict/nosuch/batch", {"json": {"features": []}}, 404),
        ("GET", "/api/ml/metrics/nosuch", {}, 404),
        ("GET", "/nowhere", {}, 404),
        ("POST", "/api/ml/predict/workload", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/api/ml/predict/workload", {"data": b"[1]", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/api/ml/predict/workload", {"data": b"", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/api/ml/predict/workload", {"data": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ("POST", "/api/ml/predict/workload/batch", {"json": {"features": {}}}, 400),
        ("POST", "/api/ml/predict/workload/batch", {"json": {"features": [{}] * (MAX_BATCH + 1)}}, 413),
        ("POST", "/api/ml/predict/workload", {"data": b" " * (MAX_BODY + 1),
                                              "headers": {"Content-Type": "application/json"}}, 413),
        ("POST", "/api/ml/metrics/reset", {}, 401),
        ("POST", "/api/ml/cache/clear", {"headers": {"Authorization": "Bearer wrong"}}, 401),
        ("POST", "/api/ml/models/workload/load", {"json": {"version": 1}}, 401),
        ("POST", "/api/ml/models/nomodel/load", {"json": {"version": 1}, "headers": AUTH}, 404),
        ("POST", "/api/ml/models/workload/load", {"json": {"version": 0}, "headers": AUTH}, 400),
        ("POST", "/api/ml/models/workload/load", {"json": {"version": 7}, "headers": AUTH}, 404),
        ("GET", "/api/ml/predict/workload", {}, 405),
    ],
)  # fmt: skip
def test_refusals_use_the_error_envelope(shim: Shim, method: str, path: str, kw: dict, expected: int) -> None:
    status, message = _error(shim, method, path, **kw)
    assert status == expected, message


def test_chunked_body_over_the_limit_is_413(shim: Shim) -> None:
    async def chunks():  # no Content-Length: aiohttp's client_max_size must stop it
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    status, _, raw = shim.call("POST", "/api/ml/predict/workload", data=chunks(),
                               headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 413 and json.loads(raw)["success"] is False


# --- metrics, cache, control ---------------------------------------------------------------



def test_metrics_shapes(shim: Shim) -> None:
    shim.json("POST", "/api/ml/predict/workload", json=valid("workload", 7))
    status, body = shim.json("GET", "/api/ml/metrics")
    assert status == 200
    check(body, response_schema("/api/ml/metrics", "get", 200))
    w = body["metrics"]["workload"]
    assert w["totalInferences"] == w["cacheHits"] + w["modelInferences"] >= 1
    assert 0 < w["minLatencyMs"] <= w["p50LatencyMs"] <= w["p99LatencyMs"] <= w["maxLatencyMs"]
    status, one = shim.json("GET", "/api/ml/metrics/workload")
    assert status == 200
    check(one, response_schema("/api/ml/metrics/{model}", "get", 200))
    status, cache = shim.json("GET", "/api/ml/cache/stats")
    assert status == 200
    check(cache, response_schema("/api/ml/cache/stats", "get", 200))


def test_reset_one_model_then_all(shim: Shim) -> None:
    shim.json("POST", "/api/ml/predict/memory", json=valid("memory", 1))
    shim.json("POST", "/api/ml/predict/threat", json=valid("threat", 1))
    status, body = shim.json("POST", "/api/ml/metrics/reset", json={"model": "memory"}, headers=AUTH)
    assert status == 200, body
    check(body, response_schema("/api/ml/metrics/reset", "post", 200))
    m = shim.json("GET", "/api/ml/metrics")[1]["metrics"]
    assert m["memory"]["requests"] == 0 and m["threat"]["requests"] >= 1
    assert shim.json("POST", "/api/ml/metrics/reset", json={"model": "nope"}, headers=AUTH)[0] == 404
    assert shim.json("POST", "/api/ml/metrics/reset", json={"model": 3}, headers=AUTH)[0] == 400
    assert shim.json("POST", "/api/ml/metrics/reset", headers=AUTH)[0] == 200
    m = shim.json("GET", "/api/ml/metrics")[1]["metrics"]
    assert all(v["requests"] == 0 and v["totalInferences"] == 0 for v in m.values())


def test_cache_clear_forgets_entries(shim: Shim) -> None:
    body = valid("failure", 777)
    shim.json("POST", "/api/ml/predict/failure", json=body)
    status, cleared = shim.json("POST", "/api/ml/cache/clear", headers=AUTH)
    assert status == 200
    check(cleared, response_schema("/api/ml/cache/clear", "post", 200))
    assert shim.json("GET", "/api/ml/cache/stats")[1]["cache"]["failure"]["entries"] == 0
    assert not shim.json("POST", "/api/ml/predict/failure", json=body)[1]["prediction"]["cacheHit"]


def test_health_and_ready(shim: Shim, daemon: Daemon) -> None:
    status, body = shim.json("GET", "/health")
    assert status == 200
    check(body, response_schema("/health", "get", 200))
    assert body["daemon"]["pid"] == daemon.proc.pid
    status, body = shim.json("GET", "/ready")
    assert status == 200 and body["ready"] is True, body
    check(body, response_schema("/ready", "get", 200))


def test_openapi_covers_every_route(shim: Shim) -> None:
    status, doc = shim.json("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    app_routes = {(r.method.lower(), r.resource.canonical) for r in shim.client.app.router.routes()}
    documented = set()
    for path, ops in doc["paths"].items():
        for method in ops:
            documented.add((method, path))
    generic = {p.replace("workload", "{model}") for _, p in documented if "workload" in p}
    for method, path in app_routes:
        if method == "head":
            continue
        assert (method, path) in documented or path in generic, (method, path)


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_histograms_are_cumulative(shim: Shim) -> None:
    for i in range(5):
        shim.json("POST", "/api/ml/predict/threat", json=valid("threat", 50 + i))
    status, headers, raw = shim.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
    assert families["shmd_latency_seconds"].type == "histogram"
    assert families["shmd_requests"].type == "counter"
    samples = families["shmd_latency_seconds"].samples
    buckets = [s for s in samples if s.name.endswith("_bucket") and s.labels["model"] == "threat"
               and s.labels["kind"] == "e2e"]  # fmt: skip
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
    count = next(
        s.value for s in samples if s.name.endswith("_count") and s.labels == {"model": "threat", "kind": "e2e"}
    )
    assert counts[-1] == count >= 5


def test_openmetrics_when_asked_for(shim: Shim) -> None:
    status, headers, raw = shim.call("GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text"), headers
    assert raw.decode().endswith("# EOF\n")
    families = {f.name for f in openmetrics_families(raw.decode())}
    assert "shmd_latency_seconds" in families


def test_promtool_accepts_the_metrics(shim: Shim) -> None:
    # promtool lints the Prometheus text format (it reads OpenMetrics counters as unhelped
    # *_total families); the OpenMetrics answer is checked by prometheus_client's strict parser above.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")
    _, _, raw = shim.call("GET", "/metrics")
    proc = subprocess.run([promtool, "check", "metrics"], input=raw, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/api/ml/cache/clear", "POST"),
        ("GET", "/api/ml/metrics/reset", "POST"),  # not the {model} route: "reset" is POST only
        ("PUT", "/api/ml/predict/workload", "POST"),
        ("DELETE", "/health", "GET,HEAD"),
    ],
)
def test_405_names_the_allowed_methods(shim: Shim, method: str, path: str, allow: str) -> None:
    status, headers, raw = shim.call(method, path)
    assert status == 405 and headers["Allow"] == allow, (status, headers)
    assert json.loads(raw) == {"success": False, "error": "Method Not Allowed"}


def test_null_body_clears_every_cache(shim: Shim) -> None:
    status, body = shim.json("POST", "/api/ml/cache/clear", data=b"null", headers={"Authorization": f"Bearer {TOKEN}",
                             "Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and body["message"] == "cache cleared for all models", body


def test_latency_buckets_never_overcount() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(np.log(200e3), 1.5, 5000).astype(np.int64)  # ns, around 200 µs
    hist = np.zeros(met.N_BUCKETS, np.int64)
    for v in values:
        hist[met_jit.bucket_of(int(v))] += 1
    pairs = latency_buckets(hist)
    for (le, got), bound in zip(pairs, LATENCY_BOUNDS_S, strict=False):
        truth = int((values <= bound * 1e9).sum())
        assert got <= truth and got >= truth * 0.98 - 5, (le, got, truth)
    assert pairs[-1] == ("+Inf", float(len(values)))


def test_daemon_still_alive(daemon: Daemon) -> None:
    assert daemon.alive(), f"daemon exited rc={daemon.proc.returncode}:\n{daemon.log()[-3000:]}"
