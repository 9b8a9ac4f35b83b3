"""packaging/: the systemd unit verifies and is hardened, the dashboard and alert rules use real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from shmd.daemon import EXIT_LOOP_FAILED, EXIT_START_FAILED

from ._http_daemon import Daemon, free_port, unique_prefix

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "shmd.service"
DASHBOARD = ROOT / "packaging" / "grafana" / "shmd.json"
RULES = ROOT / "packaging" / "prometheus" / "shmd-rules.yml"
RULES_TEST = ROOT / "packaging" / "prometheus" / "shmd-rules.test.yml"
MAX_EXPOSURE = 2.5
# Series Prometheus makes itself rather than scraping them.
SYNTHETIC = {"up"}
_METRIC = re.compile(r"\b(shmd_[a-z0-9_]+|up)\b(?!\s*\()")


def _unit_for_this_tree(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this interpreter (verify checks the binary exists)."""
    text = re.sub(r"(?m)^ExecStart=.*$", f"ExecStart={sys.executable} -m shmd.cli serve", UNIT.read_text())
    unit = tmp_path / "shmd.service"
    unit.write_text(text)
    return unit


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd)")
    return tool


def test_unit_verifies(tmp_path: Path) -> None:
    proc = subprocess.run([_systemd_analyze(), "verify", _unit_for_this_tree(tmp_path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "shmd.service" not in proc.stderr, proc.stderr


def test_unit_exposure_is_low_and_every_remaining_exposure_is_explained(tmp_path: Path) -> None:
    cmd = [_systemd_analyze(), "security", "--offline=true", "--no-pager", _unit_for_this_tree(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for shmd\.service: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    exposure = float(found.group(1))
    print(f"systemd-analyze security --offline=true: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    assert f"rates this unit\n# {exposure} " in comments, "the figure in the unit's comment is out of date"
    exposed = re.findall(r"^✗ ([A-Za-z]+)=", proc.stdout, re.MULTILINE)
    assert exposed, proc.stdout
    unexplained = sorted({d for d in exposed if f"{d}=" not in comments})
    assert not unexplained, f"remaining exposures not explained in the unit's comments: {unexplained}"


def test_unit_is_a_notify_service_with_watchdog_restart_and_its_own_user() -> None:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    assert keys["Type"] == ["notify"] and keys["NotifyAccess"] == ["main"]
    assert keys["Restart"] == ["on-failure"] and keys["StartLimitBurst"] and keys["WatchdogSec"]
    assert keys["User"] == ["shmd"] and keys["NoNewPrivileges"] == ["yes"] and keys["CapabilityBoundingSet"] == [""]
    assert "MemoryDenyWriteExecute" not in keys  # numba's JIT needs executable pages: explained in the unit
    # The daemon's failure exits (a failed loop, a failed start) must restart it, never count as success.
    for code in (EXIT_LOOP_FAILED, EXIT_START_FAILED):
        assert not any(str(code) in v.split() for v in keys.get("SuccessExitStatus", [])), keys["SuccessExitStatus"]
        assert not any(str(code) in v.split() for v in keys.get("RestartPreventExitStatus", []))


def _exprs() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    exprs = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            exprs[f"dashboard panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            exprs[f"rule {rule['alert']}"] = rule["expr"]
    return exprs


def _scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_of_the_dashboard_and_rules_is_exported_by_a_running_daemon() -> None:
    used: dict[str, set[str]] = {}
    for where, expr in _exprs().items():
        for name in _METRIC.findall(expr):
            used.setdefault(name, set()).add(where)
    assert len(used) >= 12, sorted(used)  # the pattern really finds the metrics
    prefix, port = unique_prefix("pk"), free_port()
    daemon = Daemon(prefix, port=port)
    try:
        exported = _scrape(port)
    finally:
        assert daemon.stop() == []
    missing = {name: sorted(where) for name, where in used.items() if name not in exported | SYNTHETIC}
    assert not missing, f"used but not exported by shmd serve: {missing}"


def test_rules_parse_and_every_alert_is_complete() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in doc["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    assert {"ShmdDown", "ShmdHeartbeatStale", "ShmdLatencyP99High", "ShmdQueueGrowing", "ShmdErrorRate"} <= names
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"], rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not installed (apt-get install prometheus): checked the YAML structure only")
        return
    proc = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in proc.stdout
    # Each alert fires on a history that should trip it, and not before (packaging/prometheus/shmd-rules.test.yml).
    proc = subprocess.run([promtool, "test", "rules", RULES_TEST], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    assert tested == names, f"alerts without a promtool test: {sorted(names - tested)}"


def test_dashboard_panels_are_complete() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in dash["panels"]).lower()
    for topic in ("latency", "cache hit rate", "batch size", "queue depth", "rejections", "heartbeat"):
        assert topic in titles, topic
    for panel in dash["panels"]:
        assert panel["targets"] and all(t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"])


def test_readme_links_the_packaging_and_the_benchmark_report() -> None:
    readme = (ROOT / "README.md").read_text()
    for link in ("packaging/systemd/shmd.service", "packaging/grafana/shmd.json", "packaging/prometheus/shmd-rules.yml",
                 "bench/results/REPORT.md"):  # fmt: skip
        assert f"]({link})" in readme, link
        assert (ROOT / link).exists(), link
