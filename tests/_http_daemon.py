"""Helpers for the HTTP tests: run a real daemon in a subprocess, valid request bodies."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ringbuf import leftovers, remove_leftovers
from shmd.samples import WORKLOAD as SEED_WORKLOAD

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0  # the daemon loads four models and may compile numba code on a cold cache


def unique_prefix(tag: str) -> str:
    return f"h{tag}{os.getpid()}x{secrets.token_hex(3)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``shmd serve`` in a subprocess; ``stop()`` SIGTERMs it and checks /dev/shm is clean."""

    def __init__(self, prefix: str, *, port: int | None = None, channels: str = "scheduler,shim",
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.prefix = prefix
        self.port = port
        argv = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--channels", channels, *args]
        argv += ["--host", "127.0.0.1", "--port", str(port)] if port else ["--no-http"]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{prefix}.log"
        self._log = open(self.log_path, "w+b")  # noqa: SIM115 -- lives as long as the daemon
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if "event=ready" in self.log() and (self.port is None or self._http_up()):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daemon not ready after {START_TIMEOUT_S}s:\n{self.log()}")

    def _http_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> list[str]:
        """SIGTERM, wait (bounded), then clean /dev/shm; returns what was left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        left = leftovers(self.prefix)
        remove_leftovers(self.prefix)  # last resort, so one failure cannot poison /dev/shm
        return left




def valid(model: str, i: int = 0) -> dict:
    """A valid request body for ``model``; ``i`` varies it (distinct cache keys)."""
    x = (i % 97) / 100
    if model == "workload":
        return {**SEED_WORKLOAD, "agentId": f"agent-{i}", "currentCpu": x}
    if model == "threat":
        return {
            "agentId": f"agent-{i}",
            "metrics": {"averageLatency": 12.5, "errorRate": x, "resourceUsage": 0.4, "messageFrequency": 30.0},
            "anomalies": [{"type": "port_scan", "severity": "high"}],
            "historicalThreats": [0.1, 0.2],
            "timeSinceLastThreat": 60000.0,
        }
    if model == "failure":
        return {
            "component": f"disk-{i}",
            "healthScore": 0.8,
            "currentValue": 75.0 + i,
            "baseline": 60.0,
            "trend": -0.2,
            "historicalHealth": [0.9 - 0.01 * k for k in range(20)],
            "failureHistory": [0] * 9 + [1],
            "timeSinceLastFailure": 3.6e6,
        }
    if model == "memory":
        return {
            "agentId": f"agent-{i}",
            "accessHistory": [0.01 * k for k in range(20)],
            "accessTypes": [k % 3 for k in range(20)],
            "accessTimestamps": [float(k) for k in range(20)],
            "currentAddress": x,
            "localityScore": 0.7,
        }
    raise KeyError(model)


MODELS = ("workload", "threat", "failure", "memory")
