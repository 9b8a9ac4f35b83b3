"""``python -m bench pace`` end to end at its smallest size: a real daemon, the C driver compiled
by gcc, the Python client, the echo baselines; the JSON has every transport and gap with sane
numbers, and the plot is written next to it."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from bench import pace

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build bench/c/pace.c")


def test_smallest_pace_run_reports_every_transport_and_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "QUICK", pace.SMOKE)
    out = tmp_path / "pace.json"
    assert pace.main(["--quick", "--json", str(out)]) == 0

    doc = json.loads(out.read_text())
    runs = {**doc["figures"], **{t: doc["baselines"][t] for t in pace.ECHO}}
    assert set(runs) == set(pace.TRANSPORTS)
    for transport, by_gap in runs.items():
        assert set(by_gap) == {str(g) for g in pace.GAPS_US}, transport
        for gap, rec in by_gap.items():
            lat = rec["latency_us"]
            where = f"{transport} at gap {gap} µs: {lat}"
            assert 0 < lat["n"] <= pace.SMOKE.counts[int(gap)], where
            assert 0 < lat["median"] <= lat["p99"] <= lat["p999"] <= lat["max"] < 60e6, where
            assert rec["client_cpu_us_per_request"] >= 0 and rec["peer_cpu_us_per_request"] >= 0, where
            if transport in pace.SHMD:
                assert rec["fallbacks"] == 0, where
                if transport.endswith("_miss"):  # NO_CACHE really bypassed the cache
                    assert rec["hit_rate"] == 0, where
            if transport != "mq_echo":
                assert doc["ratios"][transport][gap]["p50_over_mq"] > 0, where
    for transport in ("c_hit", "py_hit"):  # the repeated request is served from the cache (TTL 100 ms)
        recs = runs[transport].values()
        hits = sum(r["hit_rate"] * r["latency_us"]["n"] for r in recs)
        assert hits >= 0.5 * sum(r["latency_us"]["n"] for r in recs), transport
    # every shmd round trip is paced by its own loop: the daemon burnt CPU for them
    assert all(runs[t]["1000"]["peer_cpu_us_per_request"] > 0 for t in pace.SHMD)
    assert doc["baselines"]["model_batch1_call_us"]["median"] > 0
    assert doc["commit"] and doc["host"]

    assert set(doc["targets"]) >= {
        "c_hit_p50_le_mq_p50", "c_miss_p50_le_mq_p50_plus_2_model_calls", "c_p99_le_2x_mq_p99",
        "c_hit_back_to_back_p50_le_2us", "py_hit_back_to_back_p50_le_15us", "py_hit_back_to_back_le_6x_c",
        "py_hit_1ms_p50_le_mq_p50_plus_15us", "daemon_cpu_at_1000_per_s_le_10pct_core", "max_over_sequential_le_50ms",
    }  # fmt: skip
    for name, target in doc["targets"].items():
        assert target["met"] == all(c["met"] for c in target["cases"].values()), name
        for case in target["cases"].values():
            assert not math.isnan(case["value"]) and case["met"] == (case["value"] <= case["bound"]), name
    seq = doc["sequential_max"]
    assert all(seq[t]["n"] == sum(r["latency_us"]["n"] for r in runs[t].values()) for t in pace.TRANSPORTS)
    assert "indicative" in doc["targets"]["max_over_sequential_le_50ms"]["note"]

    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [n for n in os.listdir("/dev/shm") if n.startswith(f"bp{os.getpid()}x")]
    assert not leftovers, f"segments left behind: {leftovers}"
