"""``shmd status``: one line per model and per channel from a running daemon; a clear error without one."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shmd import status
from shmd._config import default_http_workers, http_channels

from ._http_daemon import MODELS, ROOT, Daemon, free_port, unique_prefix


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("st"), port=free_port(), channels="scheduler,memory")
    yield d
    assert not d.stop(), "daemon left shared memory behind"


def test_one_line_per_model_and_channel(daemon: Daemon) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shmd.cli", "status", "--port", str(daemon.port)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(rf"^shmd pid {daemon.proc.pid} prefix {daemon.prefix} ", lines[0])
    models = [ln.split()[1] for ln in lines if ln.startswith("model ")]
    channels = [ln.split()[1] for ln in lines if ln.startswith("channel ")]
    assert models == list(MODELS)
    assert channels == ["scheduler", "memory", *http_channels(default_http_workers())]  # one per shim worker


def test_render_numbers() -> None:
    doc = {
        "daemon": {"pid": 1, "prefix": "p", "backend": "litert", "heartbeatAgeMs": 2.0, "heartbeatFresh": True},
        "metrics": {"workload": {"modelVersion": 1, "totalInferences": 10, "cacheHits": 8, "cacheHitRate": 0.8,
                                 "errors": 0, "p50LatencyMs": 0.1, "p95LatencyMs": 0.2, "p99LatencyMs": 0.3,
                                 "maxLatencyMs": 0.4}},
        "channels": {"http": {"submitted": 10, "completed": 10, "rejected": 0, "queueDepth": 0, "corrupt": True}},
    }  # fmt: skip
    buf = io.StringIO()
    status.render(doc, buf)
    text = buf.getvalue()
    assert "total        10" in text and "( 80.0%)" in text and "p99 0.300" in text and "CORRUPT" in text


def test_unreachable_daemon_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(["--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert re.match(r"^shmd status: no shmd daemon reachable at http://127\.0\.0\.1:\d+ .*shmd serve", err)
