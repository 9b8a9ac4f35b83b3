"""When is ``shmd serve`` ready? When every path a first request takes has run once.

Models are loaded, validated and warmed (every batch bucket) before the loop starts, and
the loop's compiled code is loaded. What is left runs only with the loop running: the
first drain, model call, finish and wake-up on real records, and, with the HTTP shim,
the shim's handlers, decoders and channel. So once the loop runs, a thread probes every
model, one prediction and one batch each, through a path no caller uses:

- with the HTTP shim, over HTTP on ``2 x workers`` fresh connections (SO_REUSEPORT
  spreads them over the workers), through each worker's own channel;
- without it, through the daemon's startup-probe channel: created for this and unlinked
  at once (the probe writes and reads it through the daemon's own mapping, so no caller
  can ever attach to it), never listed in the stats segment (``status``,
  ``/api/ml/metrics`` and Prometheus never show it). It is served as the last channel.

The loop thread then starts serving for real (``Daemon.start_serving``): it zeroes the
metrics and the cache the probe touched, arms ``SHMD_TEST_FAULT`` (the probe's passes
never count toward it), and only then logs ``event=ready``, answers ``/health`` with 200
and sends systemd ``READY=1``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, Status

from . import samples
from ._codec import encode_payload, model_id
from ._config import Config

PROBE_TIMEOUT_S = 30.0  # the start timeout of the unit (TimeoutStartSec) is longer
BATCH = 3  # rows of each probe batch: a multi-row pass, not only batch 1


@dataclass(frozen=True)
class Outcome:
    """What the probe did: ``status`` for systemd's STATUS= line, or ``error`` (one is "")."""

    status: str
    error: str
    requests: int  # predictions it had answered
    ms: float


def _post(url: str, body: object) -> None:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S) as resp:
        answer = json.load(resp)
    if not answer.get("success"):
        raise RuntimeError(f"probe prediction over HTTP failed: {url}: {answer}")


def _probe_http(cfg: Config) -> tuple[str, int]:
    base = f"http://{cfg.host}:{cfg.port}/api/ml/predict"
    n = 0
    for _ in range(2 * cfg.workers):
        for model, body in samples.SAMPLES.items():
            _post(f"{base}/{model}", body)
            _post(f"{base}/{model}/batch", {"features": [body] * BATCH})
            n += 1 + BATCH
    return f"http {cfg.host}:{cfg.port}", n


def _requests(model: str, n: int, first_id: int) -> np.ndarray:
    mid = model_id(model)
    recs = np.zeros(n, REQUESTS[mid])
    recs["payload"] = encode_payload(mid, samples.SAMPLES[model])
    recs["model_id"], recs["abi_version"], recs["payload_len"] = mid, ABI_VERSION, PAYLOADS[mid].itemsize
    recs["flags"] = REQ_NO_CACHE
    recs["request_id"] = np.arange(first_id, first_id + n)
    recs["submit_ns"] = time.monotonic_ns()
    return recs.view(REQUEST)


def _exchange(sq: ringbuf.Producer, cq: ringbuf.Consumer, recs: np.ndarray) -> None:
    """Publish ``recs`` (one pass) and wait for every answer; raises unless each is OK."""
    if sq.produce(recs) != len(recs):
        raise RuntimeError(f"the startup-probe channel's SQ took fewer than {len(recs)} records")
    got: list[np.ndarray] = []
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while sum(map(len, got)) < len(recs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon answered {sum(map(len, got))} of {len(recs)} probe requests "
                               f"in {PROBE_TIMEOUT_S}s")  # fmt: skip
        cq.wait(0.1)
        got.append(cq.consume(len(recs)))
    answers = np.concatenate(got)
    bad = answers[answers["status"] != Status.OK]
    if len(bad):
        raise RuntimeError(f"probe request answered with status {Status(int(bad[0]['status'])).name}: "
                           f"model_id={int(bad[0]['model_id'])}")  # fmt: skip


def _probe_channel(channel: ringbuf.Channel) -> tuple[str, int]:
    sq, cq = ringbuf.Producer(channel.sq), ringbuf.Consumer(channel.cq)
    n = 0
    for model in samples.SAMPLES:
        for size in (1, BATCH):
            _exchange(sq, cq, _requests(model, size, n + 1))
            n += size
    return "the startup-probe channel", n


def probe(cfg: Config, channel: ringbuf.Channel | None) -> Outcome:
    """Every model through the running daemon, over HTTP or ``channel``; raises nothing."""
    t0 = time.monotonic()
    try:
        if cfg.http:
            via, n = _probe_http(cfg)
        elif channel is not None:
            via, n = _probe_channel(channel)
        else:  # every channel slot is a caller's (MAX_CHANNELS): nothing of ours to probe through
            via, n = "nothing (no channel left for a probe)", 0
    except Exception as err:  # any failure means "not ready": say why, never crash the daemon
        return Outcome("", repr(err), 0, (time.monotonic() - t0) * 1e3)
    ms = (time.monotonic() - t0) * 1e3
    status = f"serving prefix {cfg.prefix}: channels {','.join(cfg.channels)}; probe answered via {via} in {ms:.1f} ms"
    return Outcome(status, "", n, ms)


def start(cfg: Config, channel: ringbuf.Channel | None, done: Callable[[Outcome], None]) -> threading.Thread:
    """Probe on a thread (the poll loop must run to answer it), then ``done(outcome)`` on that thread."""
    thread = threading.Thread(target=lambda: done(probe(cfg, channel)), name="shmd-readiness", daemon=True)
    thread.start()
    return thread
