"""Run a real ``shmd serve`` in a subprocess for a test, and stop it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_TIMEOUT_S = 120.0  # first start on a fresh clone compiles and caches the numba code


class DaemonProcess:
    """A ``shmd serve --no-http`` child; ``lines`` collects its log."""

    def __init__(self, prefix: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self.lines: list[str] = []
        self._ready = threading.Event()
        cmd = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--no-http", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent, env={**os.environ, **(env or {})},
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"shmd serve did not become ready: {self.log()}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "event=ready" in line:
                self._ready.set()

    def log(self) -> str:
        return "\n".join(self.lines[-30:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
