"""Adaptive TTL in a real daemon: stable refreshes lengthen the TTL, drifting ones halve it.

The workload cache is configured with a quantum so coarse that every request shares one
entry: repeating one request is stable data, another request in its place is drift. The
TTL is read where clients and the HTTP shim read it, the stats segment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ringbuf
from kernel_abi import ModelId
from shmd._snapshot import cache_snapshot
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

CONFIG = """
adaptive_ttl = true
[cache.workload]
ttl_ms = 200
ttl_min_ms = 50
ttl_max_ms = 4000
quantum = 1e9
[cache.threat]
adaptive = false
"""
A = SAMPLES["workload"]
B = dict(A, currentCpu=0.97, historicalCpu=[0.95] * len(A["historicalCpu"]))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    path: Path = tmp_path_factory.mktemp("adaptive") / "shmd.toml"
    path.write_text(CONFIG)
    prefix = f"a{os.getpid()}x{os.urandom(3).hex()}"
    with DaemonProcess(prefix, "--channels", "a", "--config", str(path)) as proc:
        yield proc
    assert proc.proc.returncode == 0, proc.log()
    left = ringbuf.remove_leftovers(prefix)
    assert not left, f"daemon left {left}"


def test_ttl_follows_the_drift_of_recomputed_answers(daemon: DaemonProcess) -> None:
    seg = StatsSegment.attach(daemon.prefix)
    ttl = seg.arrays["cache_ttl_ns"]
    wl = ModelId.WORKLOAD

    def after_expiry(fields: dict) -> dict:
        time.sleep(ttl[wl] / 1e9 + 0.005)  # the one entry has expired: this request refreshes it
        out = c.predict("workload", fields)
        assert not out["cacheHit"]
        return out

    try:
        with Client("a", daemon.prefix) as c:
            assert ttl[wl] == 200_000_000
            first = c.predict("workload", A)
            assert c.predict("workload", B)["cacheHit"]  # one entry for every request (the quantum)
            seen = [int(ttl[wl])]
            for _ in range(3):  # stable: the same answer again
                assert after_expiry(A)["predictedCpu"] == first["predictedCpu"]
                seen.append(int(ttl[wl]))
            assert seen == sorted(set(seen)), f"stable refreshes should lengthen the TTL: {seen}"
            assert seen[-1] == int(200_000_000 * 1.125**3), seen
            drifted = after_expiry(B)  # another answer under the same key: drift
            assert drifted["predictedCpu"] != first["predictedCpu"]
            assert ttl[wl] == seen[-1] // 2
            for fields in (A, B, A):  # each differs from the answer cached before it
                after_expiry(fields)
            assert ttl[wl] == 50_000_000  # never below ttl_min_ms
            snap = cache_snapshot(seg)["workload"]
            assert snap["adaptive"] and snap["ttlMs"] == 50.0
            assert (snap["refreshesStable"], snap["refreshesDrifting"]) == (3, 4)
            assert not cache_snapshot(seg)["threat"]["adaptive"]  # [cache.threat] keeps its fixed TTL
            assert ttl[ModelId.THREAT] == 500_000_000
    finally:
        seg.close()
