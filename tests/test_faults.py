"""Faults under load, with C, Python and HTTP callers running at once (harness: tests/_faults.py).

- kill -9 of the daemon and a restart on the same prefix: no call lost, none answered twice;
- SIGSTOP for 2 s: callers with deadlines learn it at their deadline (C: the fallback), and
  recover by themselves after SIGCONT;
- a caller killed mid-batch: its channel is reclaimed and the next holder gets none of its answers;
- a client that stops reaping (its CQ fills): the other callers keep being answered, and it
  loses nothing once it reaps again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from kernel_abi import REQUEST, ModelId
from shmd.client import Client
from shmd.samples import SAMPLES

from ._faults import ROOT, Cluster
from .test_daemon import _records

pytestmark = pytest.mark.timeout(240)

WARM_S = 3.0  # callers import, attach and answer for a while before the fault


@pytest.fixture(scope="module")
def built() -> None:
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "kernel_abi" / "c")], capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def cluster(built: None) -> Iterator[Cluster]:
    """One daemon for the module (starting one with its shim costs seconds); the kill -9 test restarts it."""
    cl = Cluster(f"fl{os.getpid()}x{secrets.token_hex(3)}")
    try:
        yield cl
    finally:
        left = cl.close()
    assert not left, f"left behind: {left}"


def _accounted(results: dict[str, dict]) -> None:
    """Every caller ran, was answered by the daemon, lost nothing and got nothing twice."""
    for kind, r in results.items():
        assert not r.get("hung") and r["exit"] == 0 and not r["stderr"], (kind, r)
        assert r["ok"] > 0, (kind, r)
        assert (r["lost"], r["duplicated"]) == (0, 0), (kind, r)
    py = results["py"]
    assert py["calls"] * 4 == py["ok"] + sum(py["errors"].values()), py  # every record counted once


def test_kill9_and_restart_loses_nothing_for_any_caller(cluster: Cluster) -> None:
    callers = cluster.start_callers(120, timeout=30)
    try:
        time.sleep(WARM_S)
        down_s = cluster.kill9_and_restart()
        time.sleep(2.0)
        results = callers.finish()
    finally:
        callers.kill()
    _accounted(results)
    assert results["c"]["recoveries"] >= 1, results["c"]  # back from its fallback by itself
    assert set(results["http"]["errors"]) <= {"ConnectionRefusedError", "RemoteDisconnected", "ConnectionResetError",
                                              "http503"}, results["http"]  # fmt: skip
    assert down_s < 60


def test_sigstop_callers_learn_at_their_deadline_and_recover(cluster: Cluster) -> None:
    deadline_ms = 50.0
    callers = cluster.start_callers(120, timeout=30, deadline_ms=deadline_ms)
    try:
        time.sleep(WARM_S)
        cluster.stop_for(2.0)
        time.sleep(2.0)
        results = callers.finish()
    finally:
        callers.kill()
    assert cluster.alive(), cluster.log()
    _accounted(results)
    py, c = results["py"], results["c"]
    assert py["errors"].get("DeadlineMissed", 0) > 0, py  # the stop was noticed at the deadline...
    assert py["worst_miss_ms"] < 1000, py  # ...not long after it (generous: a loaded 2-core machine)
    assert c["fallback"] > 0 and c["trips"] >= 1 and c["recoveries"] >= 1, c


def test_caller_killed_mid_batch_leaves_nothing_to_the_next_holder(cluster: Cluster) -> None:
    code = (
        "import numpy as np; from kernel_abi import REQUEST, ModelId; from shmd.client import Client; "
        "from shmd.samples import SAMPLES; from tests.test_daemon import _records; "
        f"c = Client('spare', prefix={cluster.prefix!r}); "
        "r = _records(ModelId.THREAT, 512, c, SAMPLES['threat']); r['flags'] = 1; "
        "print(c.submit(r.view(REQUEST)), flush=True); import time; time.sleep(60)"
    )
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert victim.stdout is not None and int(victim.stdout.readline()) == 512
        victim.kill()  # mid-batch: its requests are queued or being answered
        victim.wait(10)
    finally:
        victim.kill()
    deadline = time.monotonic() + 10
    with Client("spare", prefix=cluster.prefix) as heir:  # reclaimed: the kernel dropped the dead holder's lock
        while heir.channel.cq.header["produced"] < 512:  # the daemon answers the dead caller's batch...
            assert time.monotonic() < deadline, "the dead caller's batch was never answered"
            time.sleep(0.01)
        mine = _records(ModelId.WORKLOAD, 8, heir, SAMPLES["workload"])
        assert heir.submit(mine.view(REQUEST)) == 8
        got: list[int] = []
        while len(got) < 8:
            assert time.monotonic() < deadline, f"{len(got)} of 8 answered"
            heir.wait(0.05)
            got += [int(i) for i in heir.reap()["request_id"]]
        assert sorted(got) == sorted(int(i) for i in mine["request_id"])  # none of the dead caller's
        assert heir.dropped >= 512  # ...which the heir read and dropped


def test_client_that_stops_reaping_loses_nothing_and_others_go_on(cluster: Cluster) -> None:
    callers = cluster.start_callers(120, timeout=30, kinds=("py", "http"))
    try:
        time.sleep(WARM_S)
        with Client("spare", prefix=cluster.prefix) as stalled:
            cap = stalled.channel.cq.capacity
            batches = [_records(ModelId.MEMORY, cap, stalled, SAMPLES["memory"]) for _ in range(2)]
            deadline = time.monotonic() + 15
            for recs in batches:  # two ring-fulls: one fills the CQ, one waits in the SQ
                recs["flags"] = 1
                assert stalled.submit(recs.view(REQUEST)) == cap
                while stalled._cq.ready() < cap:  # the daemon answered the first ring-full
                    assert time.monotonic() < deadline, "the daemon did not fill the CQ"
                    time.sleep(0.01)
            time.sleep(1.5)  # not reaping while the others are served
            answered: list[int] = []
            while len(answered) < 2 * cap:
                assert time.monotonic() < deadline, f"{len(answered)} of {2 * cap} answered"
                stalled.wait(0.05)
                answered += [int(i) for i in stalled.reap()["request_id"]]
        results = callers.finish()
    finally:
        callers.kill()
    expected = [int(i) for recs in batches for i in recs["request_id"]]
    assert answered == expected  # every one, once, in order
    _accounted(results)
    assert np.isfinite(results["py"]["p99_ms"]), results["py"]
