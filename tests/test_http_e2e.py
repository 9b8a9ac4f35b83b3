"""A real ``shmd serve`` with its HTTP shim on a free loopback port; the seed's curl examples replayed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ._http_daemon import MODELS, SEED_WORKLOAD, Daemon, free_port, unique_prefix, valid

CURL = shutil.which("curl")
TOKEN = "e2e-token"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("e2e"), port=free_port(), env={"SHMD_ADMIN_TOKEN": TOKEN})
    yield d
    assert not d.stop(), "daemon left shared memory behind"


def curl(*args: str) -> tuple[int, Any]:
    """Run the real curl (or urllib with the same request when curl is missing)."""
    if CURL:
        out = subprocess.run([CURL, "-s", "-w", "\n%{http_code}", *args], capture_output=True, timeout=10,
                             check=True, text=True).stdout  # fmt: skip
        body, _, code = out.rpartition("\n")
        return int(code), json.loads(body)
    url = next(a for a in args if a.startswith("http"))
    data = args[args.index("-d") + 1].encode() if "-d" in args else None
    headers = dict(args[i + 1].split(": ", 1) for i, a in enumerate(args) if a == "-H")
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if "-X" in args else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# Verbatim from seed/ML_INFERENCE_OPTIMIZATION.md ("Workload Prediction").
SEED_BODY = """{
    "agentId": "agent-123",
    "historicalCpu": [0.5, 0.6, 0.55, 0.65, 0.6, 0.7, 0.65, 0.75, 0.7, 0.8],
    "historicalMemory": [209715200, 220200960, 214958080, 230686720, 220200960, 251658240, 230686720, 272629760, 251658240, 293601280],
    "historicalGpu": [0.3, 0.35, 0.32, 0.38, 0.35, 0.4, 0.38, 0.42, 0.4, 0.45],
    "timeOfDay": 14,
    "dayOfWeek": 2,
    "currentCpu": 0.75,
    "currentMemory": 272629760,
    "currentGpu": 0.42
  }"""  # noqa: E501


def test_seed_body_is_the_helper_body() -> None:
    assert json.loads(SEED_BODY) == SEED_WORKLOAD


def test_seed_workload_example(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.port}/api/ml/predict/workload"
    status, body = curl("-X", "POST", url, "-H", "Content-Type: application/json", "-d", SEED_BODY)
    assert status == 200, body
    assert set(body) == {"success", "prediction", "latency_ms"} and body["success"] is True
    p = body["prediction"]
    assert {"predictedCpu", "predictedMemory", "predictedGpu", "confidence"} <= set(p)
    assert 0 <= p["predictedCpu"] <= 1 and 0 <= p["confidence"] <= 1 and isinstance(p["predictedMemory"], int)
    assert isinstance(body["latency_ms"], float) and body["latency_ms"] > 0


def test_seed_batch_example(daemon: Daemon) -> None:
    # The seed elides the items ("..."); its two agents with full fields.
    items = [{**SEED_WORKLOAD, "agentId": "agent-1"}, {**SEED_WORKLOAD, "agentId": "agent-2"}]
    url = f"http://127.0.0.1:{daemon.port}/api/ml/predict/workload/batch"
    status, body = curl("-X", "POST", url, "-H", "Content-Type: application/json", "-d",
                        json.dumps({"features": items}))  # fmt: skip
    assert status == 200, body
    assert set(body) == {"success", "predictions", "latency_ms", "count"}
    assert body["count"] == 2 == len(body["predictions"])


def test_seed_metrics_example(daemon: Daemon) -> None:
    status, body = curl(f"http://127.0.0.1:{daemon.port}/api/ml/metrics")
    assert status == 200 and body["success"] is True
    w = body["metrics"]["workload"]
    seed_fields = {"modelName", "totalInferences", "cacheHits", "cacheMisses", "averageLatencyMs", "minLatencyMs",
                   "maxLatencyMs", "p50LatencyMs", "p95LatencyMs", "p99LatencyMs"}  # fmt: skip
    assert seed_fields <= set(w) and w["modelName"] == "workload" and w["totalInferences"] >= 3
    assert set(body["metrics"]) == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_over_real_http(daemon: Daemon, model: str) -> None:
    base = f"http://127.0.0.1:{daemon.port}/api/ml/predict/{model}"
    status, body = curl("-X", "POST", base, "-H", "Content-Type: application/json", "-d", json.dumps(valid(model)))
    assert status == 200 and body["success"], body
    status, body = curl("-X", "POST", base + "/batch", "-H", "Content-Type: application/json", "-d",
                        json.dumps({"features": [valid(model, i) for i in range(10)]}))  # fmt: skip
    assert status == 200 and body["count"] == 10, body


def test_admin_token_from_serve_guards_reset_and_clear(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.port}/api/ml"
    assert curl("-X", "POST", f"{base}/metrics/reset")[0] == 401
    assert curl("-X", "POST", f"{base}/cache/clear", "-H", "Authorization: Bearer nope")[0] == 401
    status, body = curl("-X", "POST", f"{base}/cache/clear", "-H", f"Authorization: Bearer {TOKEN}")
    assert status == 200 and body["success"], body


def test_health_ready_and_cache_stats(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.port}"
    status, body = curl(f"{base}/health")
    assert status == 200 and body["status"] == "ok"
    assert curl(f"{base}/ready")[0] == 200
    status, body = curl(f"{base}/api/ml/cache/stats")
    assert status == 200 and set(body["cache"]) == set(MODELS)


def post_with_late_body(port: int, path: str, body: bytes, content_type: str, pause_s: float) -> bytes:
    """POST over a raw socket whose body follows its headers after ``pause_s``: the handler has
    started (and read the headers) long before the body can be parsed. The whole response."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        time.sleep(pause_s)
        s.sendall(body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_prediction_wakes_the_sleeping_daemon_before_parsing(daemon: Daemon) -> None:
    """The predict handler wakes the daemon as the request comes in (``ShimChannel.prewake``), so the
    daemon's wake-up overlaps the parse: the daemon counts a wake-up that found no work yet. The body
    follows the headers 50 ms late, so that wake-up cannot find the request already published (with
    the body at once, whether it does is a race between the daemon's wake-up and the parse). (A plain
    request takes the fast path, which does not prewake: there the parse is too short to pay for the
    wake-up's system call; a charset in Content-Type sends this one through aiohttp's handler.)"""
    from shmd._loop import LOOP_EARLY_WAKES
    from shmd._stats_segment import StatsSegment

    seg = StatsSegment.attach(daemon.prefix)
    try:
        before = int(seg.arrays["loop"][LOOP_EARLY_WAKES])
        for _ in range(3):  # each after an idle pause: the daemon sleeps (its spin is ~100 µs)
            time.sleep(0.2)
            reply = post_with_late_body(daemon.port, "/api/ml/predict/workload", SEED_BODY.encode(),
                                        "application/json; charset=utf-8", pause_s=0.05)  # fmt: skip
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
        woken = int(seg.arrays["loop"][LOOP_EARLY_WAKES]) - before
    finally:
        seg.close()
    assert woken >= 1, "no request woke the sleeping daemon before it was parsed"


def test_binds_loopback_only(daemon: Daemon) -> None:
    out = subprocess.run(["ss", "-ltnH", f"sport = :{daemon.port}"], capture_output=True, text=True, timeout=5)
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip("ss is not available")
    assert all("127.0.0.1:" in line for line in out.stdout.strip().splitlines()), out.stdout


def test_sigterm_stops_daemon_and_shim_cleanly() -> None:
    d = Daemon(unique_prefix("stop"), port=free_port())
    assert d.stop() == []
    assert d.proc.returncode == 0, d.log()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{d.port}/health", timeout=1)
