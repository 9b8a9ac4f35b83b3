"""The futex wake-up path against a live daemon: wake-ups arrive, the safety net is counted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

import kernel_abi as abi
from ringbuf import _core as core
from shmd._loop import LOOP_SLEEPS, LOOP_TIMEOUT_RESCUES, LOOP_WAKES
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import WORKLOAD

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

SLEEP_TIMEOUT_MS = 300  # long enough that a wait only the timeout ended is unmistakable


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    import os

    prefix = f"wk{os.getpid()}"
    with DaemonProcess(prefix, "--channels", "a,b", "--spin-us", "0", "--sleep-timeout-ms", str(SLEEP_TIMEOUT_MS)) as d:
        yield d


def _loop_counters(prefix: str) -> np.ndarray:
    stats = StatsSegment.attach(prefix)
    try:
        return stats.arrays["loop"].copy()
    finally:
        stats.close()


def test_paced_requests_wake_the_sleeping_daemon_and_never_need_the_timeout(daemon: DaemonProcess) -> None:
    """With no spin, every paced request finds the daemon asleep; each is woken by its publish."""
    worst = 0.0
    with Client("a", daemon.prefix, spin_us=0) as c:
        c.predict("workload", WORKLOAD)  # loads this process's compiled code
        before = _loop_counters(daemon.prefix)
        for i in range(60):
            t0 = time.monotonic()
            c.predict("workload", WORKLOAD, no_cache=i % 2 == 0)
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.002)
        client_sleeps = c._cq.sleeps
    after = _loop_counters(daemon.prefix)
    assert after[LOOP_SLEEPS] - before[LOOP_SLEEPS] >= 30, (before, after)
    lost = after[LOOP_TIMEOUT_RESCUES] - before[LOOP_TIMEOUT_RESCUES]
    assert lost == 0, f"{lost} wake-ups lost: only the timeout ended those sleeps"
    # The daemon woke the client, which slept on its CQ word, in most rounds.
    assert client_sleeps >= 30 and after[LOOP_WAKES] - before[LOOP_WAKES] >= 30, (client_sleeps, before, after)
    assert worst < SLEEP_TIMEOUT_MS / 1000 / 2, f"a round trip took {worst * 1000:.0f} ms"


def test_a_publish_without_a_wake_up_is_rescued_by_the_timeout_and_counted(daemon: DaemonProcess) -> None:
    """A producer that skips the wake-up (a planted lost wake-up) waits for the safety net, which counts it."""
    with Client("b", daemon.prefix) as c:
        c.predict("workload", WORKLOAD)  # the channel works
        time.sleep(0.05)  # the daemon is asleep again
        before = _loop_counters(daemon.prefix)
        rec = np.zeros(1, abi.REQUESTS[abi.ModelId.WORKLOAD])
        rec["payload"] = c._build(abi.ModelId.WORKLOAD, [WORKLOAD], None, False)["payload"]
        rec["request_id"], rec["model_id"], rec["abi_version"] = c.new_ids(1)[0], abi.ModelId.WORKLOAD, abi.ABI_VERSION
        rec["payload_len"] = abi.PAYLOADS[abi.ModelId.WORKLOAD].itemsize
        c._outstanding.add(int(rec["request_id"][0]))
        sq = c.channel.sq
        core.copy_into_ring(rec.view(np.uint8).reshape(1, -1), sq.slots, c._sq.state[core.OWN], 1)
        t0 = time.monotonic()
        core.ring_publish(sq.hdr64, sq.hdr32, c._sq.state, 1)  # publish, but never wake
        assert c.wait(timeout=5.0) == 1
        waited = time.monotonic() - t0
        assert len(c.reap()) == 1
        after = _loop_counters(daemon.prefix)
    assert after[LOOP_TIMEOUT_RESCUES] - before[LOOP_TIMEOUT_RESCUES] == 1, (before, after)
    assert waited > SLEEP_TIMEOUT_MS / 1000 / 10, "answered at once: the daemon was not asleep"
