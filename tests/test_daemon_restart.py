"""kill -9 of the daemon under load, restart on the same prefix: nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId, Status
from ringbuf import _core as core
from shmd._codec import encode_payload
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(300)

TOTAL = 6000


def _pending(c: Client) -> int:
    """Requests in the SQ the daemon has not released (taken but unanswered ones included)."""
    return int(c.channel.sq.hdr64[core.TAIL]) - int(c.channel.sq.hdr64[core.HEAD])


def test_kill9_under_load_then_restart_answers_everything(prefix: str) -> None:
    recs = np.zeros(TOTAL, REQUESTS[ModelId.WORKLOAD])
    recs["payload"] = encode_payload(ModelId.WORKLOAD, SAMPLES["workload"])
    recs["payload"]["current_cpu"] = np.linspace(0, 1, TOTAL)  # distinct: every one is inferred
    recs["model_id"] = ModelId.WORKLOAD
    recs["abi_version"] = ABI_VERSION
    recs["payload_len"] = PAYLOADS[ModelId.WORKLOAD].itemsize
    answered: dict[int, int] = {}
    first = DaemonProcess(prefix, "--channels", "scheduler")
    second = None
    try:
        with Client("scheduler", prefix=prefix) as c:
            recs["request_id"] = c.new_ids(TOTAL)
            recs["submit_ns"] = now_ns()
            sent = 0
            pending_at_kill = None
            deadline = time.monotonic() + 200
            while len(answered) < TOTAL:
                assert time.monotonic() < deadline, f"{len(answered)} of {TOTAL} answered"
                if sent < TOTAL:
                    sent += c.submit(recs[sent : sent + 512].view(REQUEST))
                for r in c.reap():
                    rid = int(r["request_id"])
                    assert rid not in answered, "a duplicate reached the caller"
                    assert r["status"] == Status.OK
                    answered[rid] = int(r["status"])
                if pending_at_kill is None and len(answered) >= TOTAL // 4:
                    os.kill(first.pid, signal.SIGSTOP)  # frozen mid-stream: what it has not taken stays queued
                    sent += c.submit(recs[sent : sent + 256].view(REQUEST))
                    pending_at_kill = _pending(c)
                    first.stop(signal.SIGKILL)
                    assert pending_at_kill > 0, "nothing was pending at the kill: the test proves nothing"
                    time.sleep(0.2)
                    submitted_while_down = c.submit(recs[sent : sent + 256].view(REQUEST))
                    sent += submitted_while_down
                    second = DaemonProcess(prefix, "--channels", "scheduler")
                c.wait(0.02)
            assert set(answered) == {int(i) for i in recs["request_id"]}
        assert second is not None
        pending = pending_at_kill + submitted_while_down  # what the restarted daemon found and answered
        assert f"event=channel_reattached channel=scheduler pending={pending}" in second.lines, second.log()
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            assert second.stop() == 0, second.log()
