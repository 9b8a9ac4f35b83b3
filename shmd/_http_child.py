"""The HTTP shim as a child process of ``shmd serve``: start, watch, restart, stop.

The shim is a client of the daemon like any other (its own channel), so it
runs in its own process and interpreter: its event loop never competes with
the poll loop for a GIL. ``shmd serve`` is ready when the shim answers
``/health`` with this daemon's pid; if it cannot start (a port in use, say),
serve fails with the shim's own message above its error. A shim that dies later is restarted, at most every
``RESTART_INTERVAL_S``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from ._config import HTTP_CHANNEL, Config
from ._errors import ShmdError

START_TIMEOUT_S = 30.0
RESTART_INTERVAL_S = 5.0


class HttpChild:
    def __init__(self, cfg: Config, log: Callable[..., None]) -> None:
        self.cfg = cfg
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def _spawn(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "http_shim", "--prefix", self.cfg.prefix, "--channel", HTTP_CHANNEL,
               "--host", self.cfg.host, "--port", str(self.cfg.port)]  # fmt: skip
        env = dict(os.environ)
        if self.cfg.admin_token:
            env["SHMD_ADMIN_TOKEN"] = self.cfg.admin_token
        self.started_at = time.monotonic()
        return subprocess.Popen(cmd, env=env)

    def start(self) -> None:
        """Start the shim and wait until it accepts connections."""
        self.proc = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ShmdError(
                    f"the HTTP shim exited with code {self.proc.returncode} before listening on "
                    f"{self.cfg.host}:{self.cfg.port} (its message is above); free the port, pick "
                    "another with --port, or run with --no-http"
                )
            if self._answers_for_us():
                return
            time.sleep(0.05)
        self.stop()
        raise ShmdError(f"the HTTP shim did not listen on {self.cfg.host}:{self.cfg.port} within {START_TIMEOUT_S}s")

    def _answers_for_us(self) -> bool:
        """True when /health on the port is our shim (not some other process on it)."""
        url = f"http://{self.cfg.host}:{self.cfg.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return json.load(resp).get("daemon", {}).get("pid") == os.getpid()
        except (OSError, ValueError, AttributeError):
            return False

    def check(self) -> None:
        """Restart a shim that died (called between passes)."""
        if self.proc is None or self.proc.poll() is None:
            return
        if time.monotonic() - self.started_at < RESTART_INTERVAL_S:
            return
        self.log("http_exited", code=self.proc.returncode, action="restart")
        self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
