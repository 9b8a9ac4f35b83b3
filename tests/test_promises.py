"""Promises the docs make that no other test held the code to.

- ``--keep-segments``: SIGTERM leaves the channels, and requests still queued
  in them are answered by the next daemon on the prefix;
- ``/ready`` is 503 and ``/health`` says degraded while the poll loop is
  stopped, and ``/ready`` names a corrupt channel;
- clearing one model's cache keeps the others' entries;
- a client that corrupts its CQ head gets its channel re-created once it lets go;
- ``log_format = json``: every log line is one JSON object;
- ``--backend tf`` serves the Keras models, within 1e-5 of LiteRT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, RING_NEED_WAKEUP, ModelId, Status
from ringbuf import _core as core
from ringbuf import leftovers
from shmd._codec import encode_payload
from shmd._loop import MAX_INNER_PASSES
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess
from ._http_daemon import Daemon, unique_prefix, valid
from ._oracle import Reference, api_fields
from .test_http_app import AUTH, Shim

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def _failure_records(c: Client, n: int) -> np.ndarray:
    recs = np.zeros(n, REQUESTS[ModelId.FAILURE])
    recs["payload"] = encode_payload(ModelId.FAILURE, SAMPLES["failure"])
    recs["payload"]["health_score"] = np.linspace(0, 1, n)
    recs["model_id"] = ModelId.FAILURE
    recs["abi_version"] = ABI_VERSION
    recs["payload_len"] = PAYLOADS[ModelId.FAILURE].itemsize
    recs["request_id"] = c.new_ids(n)
    recs["submit_ns"] = now_ns()
    return recs.view(REQUEST)


def _reap_all(c: Client, answered: dict[int, int], want: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(answered) < want:
        assert time.monotonic() < deadline, f"{len(answered)} of {want} answered"
        c.wait(0.05)
        for r in c.reap():
            assert int(r["request_id"]) not in answered, "answered twice"
            answered[int(r["request_id"])] = int(r["status"])


def test_keep_segments_sigterm_then_restart_answers_what_was_queued(prefix: str) -> None:
    # Passes of 8: the stopping daemon answers the passes of the step it is woken for (one
    # with litert, up to MAX_INNER_PASSES in compiled code) and leaves the rest queued.
    first = DaemonProcess(prefix, "--channels", "a", "--keep-segments", env={"SHMD_MAX_BATCH": "8"})
    second = None
    try:
        with Client("a", prefix=prefix) as c:
            recs = _failure_records(c, MAX_INNER_PASSES * 8 + 200)
            deadline = time.monotonic() + 5
            while not c.channel.sq.hdr32[core.FLAGS] & RING_NEED_WAKEUP:  # asleep, not mid-drain
                assert time.monotonic() < deadline, "the idle daemon never went to sleep"
                time.sleep(0.001)
            os.kill(first.pid, signal.SIGSTOP)  # nothing is taken while we queue
            assert c.submit(recs) == len(recs)
            os.kill(first.pid, signal.SIGTERM)
            os.kill(first.pid, signal.SIGCONT)
            assert first.proc.wait(20) == 0, first.log()
            answered: dict[int, int] = {}
            for r in c.reap():  # what the stopping daemon published from the pass in hand
                answered[int(r["request_id"])] = int(r["status"])
            queued = int(c.channel.sq.hdr64[core.TAIL]) - int(c.channel.sq.hdr64[core.HEAD])
            assert queued == len(recs) - len(answered) > 0, (queued, len(answered))
            assert f"/{prefix}.a" in leftovers(prefix), "--keep-segments unlinked the channel"
            second = DaemonProcess(prefix, "--channels", "a")  # this one unlinks on exit
            _reap_all(c, answered, len(recs))
        assert set(answered) == {int(i) for i in recs["request_id"]} and set(answered.values()) == {Status.OK}
        assert f"event=channel_reattached channel=a pending={queued}" in second.lines, second.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Daemon, Shim]]:
    d = Daemon(unique_prefix("pr"), channels="a,b,shim")  # the test shim holds "shim"
    shim = Shim(d.prefix)
    yield d, shim
    shim.close()
    assert not d.stop(), "daemon left shared memory behind"


def test_ready_503_and_health_degraded_while_the_loop_is_stopped(served: tuple[Daemon, Shim]) -> None:
    daemon, shim = served
    deadline = time.monotonic() + 5
    while shim.json("GET", "/ready")[0] != 200:  # a loaded machine may delay the first heartbeat
        assert time.monotonic() < deadline, shim.json("GET", "/ready")[1]
        time.sleep(0.05)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.3)  # the heartbeat is stale after 1 s
        status, ready = shim.json("GET", "/ready")
        health = shim.json("GET", "/health")[1]
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert status == 503 and ready["ready"] is False and "heartbeat is stale" in ready["error"], ready
    assert health["status"] == "degraded" and health["daemon"]["heartbeatFresh"] is False, health
    deadline = time.monotonic() + 5
    while shim.json("GET", "/ready")[0] != 200:
        assert time.monotonic() < deadline, "not ready again after SIGCONT"
        time.sleep(0.02)
    assert shim.json("GET", "/health")[1]["status"] == "ok"


def test_cache_clear_of_one_model_keeps_the_others(served: tuple[Daemon, Shim]) -> None:
    _, shim = served
    bodies = {"failure": valid("failure", 4242), "threat": valid("threat", 4242)}  # TTLs 1 s and 0.5 s

    def hit(model: str) -> bool:
        status, body = shim.json("POST", f"/api/ml/predict/{model}", json=bodies[model])
        assert status == 200, body
        return body["prediction"]["cacheHit"]

    assert [hit("failure"), hit("threat")] == [False, False]
    assert [hit("failure"), hit("threat")] == [True, True]
    status, body = shim.json("POST", "/api/ml/cache/clear", json={"model": "failure"}, headers=AUTH)
    assert status == 200, body
    assert [hit("failure"), hit("threat")] == [False, True]


def test_corrupt_cq_head_gets_the_channel_recreated_once_released(served: tuple[Daemon, Shim]) -> None:
    daemon, shim = served
    with Client("b", prefix=daemon.prefix, timeout=1.0) as broken:
        broken.channel.cq.hdr64[core.HEAD] = 10**12  # a head past any tail
        broken.submit(_failure_records(broken, 1))  # the daemon looks at the CQ when it has work
        deadline = time.monotonic() + 5
        while shim.json("GET", "/ready")[0] == 200:
            assert time.monotonic() < deadline, "a corrupt CQ head went unnoticed"
            time.sleep(0.02)
        assert "channel b is marked corrupt" in shim.json("GET", "/ready")[1]["error"]
        with Client("a", prefix=daemon.prefix) as healthy:  # the other channel is untouched
            assert healthy.predict("memory", SAMPLES["memory"])["accessType"] in (0, 1, 2)
    deadline = time.monotonic() + 5
    while "event=channel_reset channel=b reason=corrupt" not in daemon.log():
        assert time.monotonic() < deadline, "the corrupt channel was never re-created"
        time.sleep(0.02)
    with Client("b", prefix=daemon.prefix) as fresh:
        assert fresh.predict("memory", SAMPLES["memory"])["accessType"] in (0, 1, 2)
    while shim.json("GET", "/ready")[0] != 200:  # the gauges follow at the next housekeeping
        assert time.monotonic() < deadline + 2, shim.json("GET", "/ready")[1]
        time.sleep(0.02)


def _serve(prefix: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--no-http", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip


def test_json_log_format_is_one_object_per_line(prefix: str) -> None:
    proc = _serve(prefix, "--channels", "a", env={"SHMD_LOG_FORMAT": "json"})
    try:
        assert proc.stderr is not None
        events = []
        while not events or events[-1]["event"] != "ready":  # bounded by the module timeout
            events.append(json.loads(proc.stderr.readline()))
        ready = events[-1]
        assert ready["event"] == "ready" and ready["pid"] == proc.pid and ready["channels"] == "a", ready
        with Client("a", prefix=prefix) as c:
            c.predict("workload", SAMPLES["workload"])
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=20)[1]
    events = [json.loads(line) for line in rest.splitlines()]  # every line parses
    assert [e["event"] for e in events][-1] == "stopped" and proc.returncode == 0, rest


def test_tf_backend_serves_what_litert_serves(prefix: str) -> None:
    pytest.importorskip("tensorflow", reason="the tf backend needs the train extra (TensorFlow)")
    ref = Reference()
    with DaemonProcess(prefix, "--channels", "a", "--backend", "tf"), Client("a", prefix=prefix) as c:
        for model in SAMPLES:
            got = c.predict(model, SAMPLES[model], no_cache=True)
            # Keras and LiteRT differ by at most 1e-5 in raw outputs (test_models_artifacts); memory
            # bytes are expm1(30 x), so 3e-4 relative.
            for name, value in api_fields(model, ref.outputs(model, SAMPLES[model])).items():
                assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-4), (model, name, got)
