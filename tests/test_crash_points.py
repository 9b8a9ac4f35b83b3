"""A daemon that dies between publishing answers and releasing SQ slots (or just after) loses nothing.

The daemon's test-only fault point (``SHMD_TEST_FAULT``, ``shmd/_loop.py``)
``_exit``s it right after the N-th CQ publish, or right after the N-th SQ
release. A daemon restarted on the same prefix must then answer every request
exactly once: after a kill between publish and release it re-answers the
published pass (the client drops those duplicates); after a kill past the
release it re-answers nothing. Were the slots released before the answers
were published, the first kind of kill would lose that pass's requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId, Status
from ringbuf import _core as core
from shmd._codec import encode_payload
from shmd._loop import FAULT_EXIT_CODE
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

TOTAL = 3000
BATCH = 64  # the daemon's max_batch: the SQ (1024) holds many passes' worth
FAULT_AT = 4  # die at the 4th publish/release: mid-stream, with a full SQ behind it


def _requests(c: Client) -> np.ndarray:
    recs = np.zeros(TOTAL, REQUESTS[ModelId.WORKLOAD])
    recs["payload"] = encode_payload(ModelId.WORKLOAD, SAMPLES["workload"])
    recs["payload"]["current_cpu"] = np.linspace(0, 1, TOTAL)  # distinct: every one is inferred
    recs["model_id"] = ModelId.WORKLOAD
    recs["abi_version"] = ABI_VERSION
    recs["payload_len"] = PAYLOADS[ModelId.WORKLOAD].itemsize
    recs["request_id"] = c.new_ids(TOTAL)
    recs["submit_ns"] = now_ns()
    return recs.view(REQUEST)


def _take(c: Client, answered: dict[int, int]) -> None:
    for r in c.reap():
        rid = int(r["request_id"])
        assert rid not in answered, "a duplicate reached the caller"
        assert r["status"] == Status.OK, r
        answered[rid] = int(r["status"])


def _pump(c: Client, recs: np.ndarray, sent: int, answered: dict[int, int], until: Callable[[], bool],
          what: str) -> int:  # fmt: skip
    """Submit as room allows and reap until ``until()``; returns how many are submitted."""
    deadline = time.monotonic() + 30
    while not until():
        assert time.monotonic() < deadline, f"{what}: {len(answered)} of {TOTAL} answered"
        if sent < TOTAL:
            sent += c.submit(recs[sent:])
        _take(c, answered)
        c.wait(0.02)
    return sent


@pytest.mark.parametrize("point", ["after_publish", "after_release"])
def test_killed_mid_pass_then_restarted_answers_everything_once(prefix: str, point: str) -> None:
    env = {"SHMD_TEST_FAULT": f"{point}:{FAULT_AT}", "SHMD_MAX_BATCH": str(BATCH)}
    first = DaemonProcess(prefix, "--channels", "scheduler", env=env)
    second = None
    answered: dict[int, int] = {}
    try:
        with Client("scheduler", prefix=prefix) as c:
            recs = _requests(c)
            sent = c.submit(recs)  # one publish fills the SQ: the daemon drains BATCH per pass
            sent = _pump(c, recs, sent, answered, lambda: first.proc.poll() is not None, "waiting for the fault")
            assert first.proc.returncode == FAULT_EXIT_CODE, first.log()
            _take(c, answered)  # what the dead daemon published
            pending = int(c.channel.sq.hdr64[core.TAIL]) - int(c.channel.sq.hdr64[core.HEAD])
            assert pending > 0, "no request was pending at the kill: the test proves nothing"
            assert len(answered) < TOTAL
            second = DaemonProcess(prefix, "--channels", "scheduler")
            _pump(c, recs, sent, answered, lambda: len(answered) == TOTAL, "after the restart")
            assert set(answered) == {int(i) for i in recs["request_id"]}
            if point == "after_publish":  # the published pass was answered again, and dropped
                assert c.dropped == BATCH, f"dropped={c.dropped}: the re-answered pass is not {BATCH} duplicates"
            else:
                assert c.dropped == 0, f"dropped={c.dropped}: released requests were answered twice"
        assert f"event=channel_reattached channel=scheduler pending={pending}" in second.lines, second.log()
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log()
