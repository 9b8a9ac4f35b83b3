"""No request waits on the loop's safety-net timeout: paced round trips over HTTP, C and Python.

The stall this guards against: a request published while the daemon falls
asleep whose wake-up is lost waits for the loop's sleep timeout (100 ms by
default): once in ~10,000 HTTP requests in issue 9. Here the timeout is
raised to 1.5 s, so a lost wake-up cannot hide as a merely slow trip. Two
checks, over every transport: the daemon's own count of sleeps that only the
timeout ended and that then found work (LOOP_TIMEOUT_RESCUES) stays 0, and
no round trip takes 0.5 s (generous: other test suites share these 2 CPUs;
the 50 ms bound over 50,000 trips is ``python -m bench pace``'s
sequential-maximum figure, measured with the machine to itself).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kernel_abi import ModelId
from shmd import _codec
from shmd._loop import LOOP_SLEEPS, LOOP_TIMEOUT_RESCUES
from shmd._records import requests_for
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import WORKLOAD

from ._http_daemon import Daemon, free_port, unique_prefix

pytestmark = pytest.mark.timeout(150)

MAX_S = 0.5
# Raised, but below the 2 s after which a client's liveness check calls a silent daemon hung.
SAFETY_NET_MS = "1500"
BENCH = Path(__file__).resolve().parent.parent / "kernel_abi" / "c" / "build" / "shmd_bench"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("stall"), port=free_port(), channels="py,c", env={"SHMD_SLEEP_TIMEOUT_MS": SAFETY_NET_MS})
    try:
        yield d
    finally:
        d.stop()


def _loop(prefix: str) -> np.ndarray:
    stats = StatsSegment.attach(prefix)
    try:
        return stats.arrays["loop"].copy()
    finally:
        stats.close()


def _paced(trip, n: int, gap_s: float) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        trip()
        out.append(time.perf_counter() - t0)
        time.sleep(gap_s)  # past the daemon's spin: most trips find it asleep
    return out


def _no_stall(name: str, times: list[float], before: np.ndarray, after: np.ndarray) -> None:
    rescued = int(after[LOOP_TIMEOUT_RESCUES] - before[LOOP_TIMEOUT_RESCUES])
    assert rescued == 0, f"{name}: {rescued} requests waited for the loop's sleep timeout (lost wake-ups)"
    assert after[LOOP_SLEEPS] > before[LOOP_SLEEPS], f"{name}: the daemon never slept: the wake path was not tested"
    worst = max(times)
    assert worst < MAX_S, f"{name}: slowest of {len(times)} round trips took {worst * 1000:.1f} ms"


def test_http_round_trips(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    body = json.dumps(WORKLOAD)

    def trip() -> None:
        conn.request("POST", "/api/ml/predict/workload", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()

    trip()  # the connection's first request
    before = _loop(daemon.prefix)
    times = _paced(trip, 1000, 0.0005)
    _no_stall("http", times, before, _loop(daemon.prefix))


def test_python_client_round_trips(daemon: Daemon) -> None:
    with Client("py", daemon.prefix) as c:
        c.predict("workload", WORKLOAD)
        before = _loop(daemon.prefix)
        times = _paced(lambda: c.predict("workload", WORKLOAD, no_cache=True), 1500, 0.0003)
        _no_stall("python", times, before, _loop(daemon.prefix))


def test_c_client_round_trips(daemon: Daemon) -> None:
    if not BENCH.exists():
        pytest.skip(f"{BENCH} not built: run `make native`")
    record = requests_for(ModelId.WORKLOAD, _codec.encode_payloads(ModelId.WORKLOAD, [WORKLOAD]), submit_ns=0)
    before = _loop(daemon.prefix)
    times = []
    for _ in range(5):  # a few runs, so the daemon sleeps in between
        run = subprocess.run(
            [str(BENCH), daemon.prefix, "c", "miss", "2000"], input=record.tobytes(), capture_output=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert b"fallbacks=0" in run.stdout and b"done count=2000" in run.stdout, run.stdout[-200:]
        times += [int(line) / 1e9 for line in run.stdout.split()[:-5] if line.isdigit()]
        time.sleep(0.02)
    assert len(times) >= 9000, len(times)
    _no_stall("c", times, before, _loop(daemon.prefix))
