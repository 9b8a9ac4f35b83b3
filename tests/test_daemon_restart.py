"""kill -9 of the daemon under load, restart on the same prefix: nothing is lost."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId, Status
from shmd._codec import encode_payload
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(300)

TOTAL = 6000


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
            killed_at = None
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
                if killed_at is None and len(answered) >= TOTAL // 4:
                    first.stop(signal.SIGKILL)  # mid-stream: requests are in the SQ and in flight
                    killed_at = len(answered)
                    time.sleep(0.2)
                    submitted_while_down = c.submit(recs[sent : sent + 256].view(REQUEST))
                    sent += submitted_while_down
                    second = DaemonProcess(prefix, "--channels", "scheduler")
                c.wait(0.02)
            assert killed_at is not None and killed_at < TOTAL
            assert set(answered) == {int(i) for i in recs["request_id"]}
        assert second is not None
        assert any("event=channel_reattached channel=scheduler" in line for line in second.lines), second.log()
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            assert second.stop() == 0, second.log()
