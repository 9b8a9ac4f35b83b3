"""``python -m bench report``: the committed benchmark JSON becomes REPORT.md with plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

pytest.importorskip("matplotlib", reason="matplotlib is in the bench extra: pip install -e '.[bench]'")
pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"

# The shapes the benchmarks write: ns and µs summaries, a pace sweep by gap, batch throughputs, table rows.
SAMPLE = {
    "host": "h", "unix_time": 0, "commit": "abc123",
    "figures": {
        "rtt_busy_ns": {"median": 2000.0, "p99": 3000.0, "p999": 5000.0, "max": 9000.0, "p1": 1000.0, "n": 10},
        "c_hit": {"0": {"latency_us": {"median": 1.0, "p99": 2.0, "n": 5}},
                  "100": {"latency_us": {"median": 1.5, "p99": 3.0, "n": 5}}},
        "oneway_batch1_rps": {"median": 1e6, "p99": 2e6, "p1": 5e5, "n": 3},
        "oneway_batch32_rps": {"median": 8e6, "p99": 9e6, "p1": 7e6, "n": 3},
    },
    "baselines": {"mq_rtt_us": {"median": 8.0, "p99": 60.0, "n": 10}},
    "results": [{"model": "m", "batch": 1, "rows_per_s": 10.0, "median_us": 1.0, "p99_us": 2.0}],
    "ratios": {"busy_over_mq": 0.25},
    "targets": {"busy_within_3x": False},
}  # fmt: skip


def test_latencies_are_found_by_shape_in_microseconds() -> None:
    found = {lat.path: lat for lat in report.find_latencies("s", SAMPLE)}
    busy = found[("figures", "rtt_busy_ns")]
    assert busy.quantiles == {0.01: 1.0, 0.5: 2.0, 0.99: 3.0, 0.999: 5.0, 1.0: 9.0} and not busy.baseline
    assert found[("baselines", "mq_rtt_us")].baseline
    assert report._pace_of(found[("figures", "c_hit", "100", "latency_us")]) == (
        "gap between requests, µs (0 = back to back)", 100.0)  # fmt: skip
    assert report._pace_of(busy) is None
    assert ("figures", "oneway_batch1_rps") not in found  # a throughput, not a latency
    assert report._pace_of(found[("results", "[0]")]) is None  # a table row, not a sweep


def test_throughput_series_by_batch() -> None:
    series = report.throughput_series(SAMPLE)
    assert series["oneway_batchN_rps"] == [(1, 1e6, False), (32, 8e6, False)]


def test_report_builds_from_the_committed_results(tmp_path: Path) -> None:
    for path in (ROOT / "bench" / "results").glob("*.json"):
        shutil.copy(path, tmp_path)
    (tmp_path / "sample.json").write_text(json.dumps(SAMPLE))
    proc = subprocess.run([sys.executable, "-m", "bench", "report", "--results", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=100)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "REPORT.md").read_text()
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["http_vs_bare.png", "latency_cdf.png", "latency_vs_pace.png", "throughput_vs_batch.png"]
    for name in plots:
        assert f"](plots/{name})" in text
        assert (tmp_path / "plots" / name).read_bytes().startswith(PNG)
    for path in tmp_path.glob("*.json"):
        assert f"\n## {path.stem}\n" in text
    assert "host `h`, 1970-01-01 00:00 UTC, commit `abc123`" in text
    assert "| baselines | mq_rtt_us | median 8, p99 60, n 10 |" in text
    assert "| targets | busy_within_3x | **missed** |" in text

