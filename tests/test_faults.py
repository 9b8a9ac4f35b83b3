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
import time
from collections.abc import Iterator

import pytest

from ._faults import ROOT, Cluster, kill_caller_mid_batch, stall_reaping

pytestmark = pytest.mark.timeout(240)

WARM_S = 1.0  # callers answered for a while before the fault


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
        callers.wait_started()
        time.sleep(WARM_S)
        down_s = cluster.kill9_and_restart()
        time.sleep(2.0)
        results = callers.finish()
    finally:
        callers.kill()
    _accounted(results)
    assert results["c"]["recoveries"] >= 1, results["c"]  # back from its fallback by itself
    told = {"ConnectionRefusedError", "RemoteDisconnected", "ConnectionResetError", "BrokenPipeError", "http503"}
    assert set(results["http"]["errors"]) <= told, results["http"]  # the connection's end, while it was down
    assert down_s < 60


def test_sigstop_callers_learn_at_their_deadline_and_recover(cluster: Cluster) -> None:
    deadline_ms = 50.0
    callers = cluster.start_callers(120, timeout=30, deadline_ms=deadline_ms)
    try:
        callers.wait_started()
        time.sleep(WARM_S)
        cluster.stop_for(2.0)
        time.sleep(2.0)
        results = callers.finish()
    finally:
        callers.kill()
    assert cluster.alive(), cluster.log()
    _accounted(results)
    py, c = results["py"], results["c"]
    # The stop was noticed at the deadline (DeadlineMissed: the caller's own verdict) or by the
    # daemon once it ran again (DEADLINE_EXCEEDED)...
    assert py["errors"].get("DeadlineMissed", 0) + py["errors"].get("DEADLINE_EXCEEDED", 0) > 0, py
    assert py["worst_miss_ms"] < 1000, py  # ...not long after it (generous: a loaded 2-core machine)
    assert c["fallback"] > 0 and c["trips"] >= 1 and c["recoveries"] >= 1, c


def test_caller_killed_mid_batch_leaves_nothing_to_the_next_holder(cluster: Cluster) -> None:
    r = kill_caller_mid_batch(cluster.prefix, n=512)
    assert r["submitted_by_victim"] == 512, r
    assert r["heir_answers"] == 8 and r["heir_got_only_its_own"], r  # none of the dead caller's
    assert r["dropped_by_heir"] + r["answered_before_heir"] >= 512, r  # ...which were answered, then dropped


def test_client_that_stops_reaping_loses_nothing_and_others_go_on(cluster: Cluster) -> None:
    callers = cluster.start_callers(120, timeout=30, kinds=("py", "http"))
    try:
        callers.wait_started()
        time.sleep(WARM_S)
        stalled = stall_reaping(cluster.prefix, 1.5)
        results = callers.finish()
    finally:
        callers.kill()
    assert stalled["in_order"] and stalled["answered"] == stalled["submitted"], stalled  # every one, once, in order
    _accounted(results)
