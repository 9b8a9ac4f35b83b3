"""The soak, 30 seconds of it: mixed C, Python and HTTP load with random faults (``python -m bench soak``).

Nothing lost, nothing answered twice, every fault's own accounting right, no
error a caller was not entitled to, the daemon alive without a traceback, and
nothing left in /dev/shm. (The RSS figure needs minutes: ``bench soak``.)
"""

from __future__ import annotations

import subprocess

import pytest

from bench.soak import report, soak

from ._faults import ROOT

pytestmark = pytest.mark.timeout(240)


def test_thirty_seconds_of_mixed_load_and_random_faults() -> None:
    built = subprocess.run(["make", "-s", "-C", str(ROOT / "kernel_abi" / "c")], capture_output=True, text=True,
                           timeout=180)  # fmt: skip
    assert built.returncode == 0, built.stderr
    s = soak(30.0, seed=1)
    summary = report(s)
    assert s["faults"], summary  # at least one fault went in
    assert (s["lost"], s["duplicated"]) == (0, 0), summary
    assert not s["fault_failures"] and not s["unexpected_errors"], summary
    for kind, r in s["callers"].items():
        assert r["ok"] > 0 and r["exit"] == 0 and not r["stderr"], (kind, summary)
    assert s["daemon_alive"] and s["tracebacks_in_log"] == 0 and not s["left_behind"], summary
