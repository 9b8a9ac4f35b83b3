"""When is ``shmd serve`` ready? When every path a first request takes has run once.

Models are loaded, validated and warmed (every batch bucket) before the loop starts, and
the loop's compiled code is loaded. What is left runs only with the loop running: the
first drain, model call, finish and wake-up on real records, and, with the HTTP shim, the
shim's handlers, decoders and channel. So once the loop runs, ``start`` probes on a
thread: every model through the path callers take (over HTTP: one prediction and one
batch per model, on ``2 x workers`` fresh connections so SO_REUSEPORT spreads them over
the workers; without HTTP, a ``Client`` on the first channel no caller holds, for the few
ms of the probe: a caller attaching in that window gets ``ChannelBusy`` naming the
daemon's pid, and retries). Only then does the daemon log ``event=ready``, answer
``/health`` with 200 and send systemd ``READY=1``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable

from . import samples
from ._config import Config
from ._errors import ChannelBusy

PROBE_TIMEOUT_S = 30.0  # the start timeout of the unit (TimeoutStartSec) is longer


def _post(url: str, body: object) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S) as resp:
        answer = json.load(resp)
    if not answer.get("success"):
        raise RuntimeError(f"probe prediction over HTTP failed: {url}: {answer}")
    return answer


def _probe_http(cfg: Config) -> str:
    base = f"http://{cfg.host}:{cfg.port}/api/ml/predict"
    for _ in range(2 * cfg.workers):
        for model, body in samples.SAMPLES.items():
            _post(f"{base}/{model}", body)
            _post(f"{base}/{model}/batch", {"features": [body, body, body]})
    return f"http {cfg.host}:{cfg.port}"


def _probe_channel(cfg: Config) -> str:
    from .client import Client

    for channel in cfg.channels:
        try:
            with Client(channel, cfg.prefix, timeout=PROBE_TIMEOUT_S) as client:
                for model, body in samples.SAMPLES.items():
                    client.predict(model, body, no_cache=True)
                    client.predict_many(model, [body, body, body], no_cache=True)
            return f"channel {channel}"
        except ChannelBusy:
            continue  # a caller holds it: it is being served, try the next
    raise RuntimeError(f"every channel is held by a caller, none free to probe: channels={','.join(cfg.channels)}")


def probe(cfg: Config) -> str:
    """Every model through the running daemon, as callers reach it; the ``STATUS=`` line. Raises if unanswered."""
    t0 = time.monotonic()
    via = _probe_http(cfg) if cfg.http else _probe_channel(cfg)
    ms = (time.monotonic() - t0) * 1e3
    return f"serving prefix {cfg.prefix}: channels {','.join(cfg.channels)}; probe answered via {via} in {ms:.1f} ms"


def start(cfg: Config, done: Callable[[str, str], None]) -> threading.Thread:
    """Probe on a thread (the poll loop must run to answer it), then ``done(status, error)``: one is ""."""

    def run() -> None:
        try:
            status = probe(cfg)
        except Exception as err:  # any failure means "not ready": say why, never crash the daemon
            done("", repr(err))
            return
        done(status, "")

    thread = threading.Thread(target=run, name="shmd-readiness", daemon=True)
    thread.start()
    return thread
