"""When is ``shmd serve`` ready? When it has answered a real prediction.

Logging ``event=ready`` means the channels exist and the shim listens; a
service manager should hear ``READY=1`` only once a request has gone the
whole way: ring (or HTTP), drain, model, completion. ``announce`` runs that
probe on a thread once the poll loop runs, then notifies.

With the HTTP shim the probe is one ``POST /api/ml/predict/workload`` (the
path HTTP callers take, through whichever shim worker answers); without it,
a ``Client`` on the first channel no caller holds, for the few ms of one
prediction (a caller attaching in that window gets ``ChannelBusy`` naming the
daemon's pid, and retries).
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
from ._notify import Notifier

PROBE_TIMEOUT_S = 30.0  # the start timeout of the unit (TimeoutStartSec) is longer
PROBE_MODEL = "workload"


def _probe_http(cfg: Config) -> str:
    url = f"http://{cfg.host}:{cfg.port}/api/ml/predict/{PROBE_MODEL}"
    body = json.dumps(samples.WORKLOAD).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S) as resp:
        answer = json.load(resp)
    if not answer.get("success"):
        raise RuntimeError(f"probe prediction over HTTP failed: {answer}")
    return f"http {cfg.host}:{cfg.port}"


def _probe_channel(cfg: Config) -> str:
    from .client import Client

    for channel in cfg.channels:
        try:
            with Client(channel, cfg.prefix, timeout=PROBE_TIMEOUT_S) as client:
                client.predict(PROBE_MODEL, samples.WORKLOAD, no_cache=True)
            return f"channel {channel}"
        except ChannelBusy:
            continue  # a caller holds it: it is being served, try the next
    raise RuntimeError(f"every channel is held by a caller, none free to probe: channels={','.join(cfg.channels)}")


def probe(cfg: Config) -> str:
    """One real prediction through the running daemon; the ``STATUS=`` line. Raises if unanswered."""
    t0 = time.monotonic()
    via = _probe_http(cfg) if cfg.http else _probe_channel(cfg)
    ms = (time.monotonic() - t0) * 1e3
    return f"serving prefix {cfg.prefix}: channels {','.join(cfg.channels)}; probe answered via {via} in {ms:.1f} ms"


def announce(notifier: Notifier, cfg: Config, log: Callable[..., None]) -> threading.Thread | None:
    """Probe on a thread (the poll loop must run to answer it), then send ``READY=1``.

    Without ``$NOTIFY_SOCKET`` nothing is probed. If the probe fails READY is
    never sent: systemd's start timeout then fails the unit, which is the truth.
    """
    if not notifier.enabled:
        return None

    def run() -> None:
        try:
            status = probe(cfg)
        except Exception as err:  # any failure means "not ready": say why, never crash the daemon
            log("not_ready", error=repr(err))
            notifier.send(status=f"readiness probe failed: {err}")
            return
        notifier.ready(status)
        log("notified", ready=1, status=status)

    thread = threading.Thread(target=run, name="shmd-readiness", daemon=True)
    thread.start()
    return thread
