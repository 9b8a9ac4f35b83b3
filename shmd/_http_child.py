"""The HTTP shim as child processes of ``shmd serve``: start, watch, restart, stop.

The shim is a client of the daemon like any other, so it runs in its own processes
and interpreters: its event loops never compete with the poll loop for a GIL.
``--http-workers N`` runs N shim processes on one port (SO_REUSEPORT: the kernel
spreads connections over them), each holding its own channel (``http``, ``http1``,
...). Each worker prints one line on its stdout once it listens; ``shmd serve`` is
ready when every worker has and ``/health`` on the port answers with this daemon's
pid. If a worker cannot start (a port in use, say), serve fails with the worker's
own message above its error. A worker that dies later is restarted, at most every
``RESTART_INTERVAL_S``.

With SO_REUSEPORT (N > 1) another process of the same user that also sets it could
bind the same port and receive a share of the connections; with N = 1 the port is
bound exclusively, as before.

Every worker asks to die with serve (PR_SET_PDEATHSIG, in ``http_shim``), so a
daemon killed with SIGKILL leaves no shim behind.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ._config import Config, http_channels
from ._errors import ShmdError

START_TIMEOUT_S = 30.0
RESTART_INTERVAL_S = 5.0


class _Worker:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0


class HttpChild:
    def __init__(self, cfg: Config, log: Callable[..., None]) -> None:
        self.cfg = cfg
        self.log = log
        self.workers = [_Worker(name) for name in http_channels(cfg.workers)]

    def _spawn(self, worker: _Worker) -> None:
        cmd = [sys.executable, "-m", "http_shim", "--prefix", self.cfg.prefix, "--channel", worker.channel,
               "--host", self.cfg.host, "--port", str(self.cfg.port), "--exit-with-parent"]  # fmt: skip
        if len(self.workers) > 1:
            cmd.append("--reuse-port")
        env = dict(os.environ)
        if self.cfg.admin_token:
            env["SHMD_ADMIN_TOKEN"] = self.cfg.admin_token
        worker.started_at = time.monotonic()
        worker.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)

    def start(self) -> None:
        """Start every worker and wait until each listens and the port answers for this daemon."""
        for worker in self.workers:
            self._spawn(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = {w.proc.stdout: w for w in self.workers if w.proc is not None and w.proc.stdout is not None}
        with selectors.DefaultSelector() as sel:
            for pipe in waiting:
                sel.register(pipe, selectors.EVENT_READ)
            while waiting and time.monotonic() < deadline:
                for worker in waiting.values():
                    self._fail_if_exited(worker)
                for key, _ in sel.select(timeout=0.05):
                    if key.fileobj.readline():  # type: ignore[union-attr]
                        sel.unregister(key.fileobj)
                        waiting.pop(key.fileobj)  # type: ignore[call-overload]
        while time.monotonic() < deadline:
            for worker in self.workers:
                self._fail_if_exited(worker)
            if not waiting and self._answers_for_us():
                return
            time.sleep(0.05)
        self.stop()
        raise ShmdError(f"the HTTP shim did not listen on {self.cfg.host}:{self.cfg.port} within {START_TIMEOUT_S}s")

    def _fail_if_exited(self, worker: _Worker) -> None:
        if worker.proc is not None and worker.proc.poll() is not None:
            code = worker.proc.returncode
            self.stop()
            raise ShmdError(
                f"the HTTP shim exited with code {code} before listening on "
                f"{self.cfg.host}:{self.cfg.port} (its message is above); free the port, pick "
                "another with --port, or run with --no-http"
            )

    def _answers_for_us(self) -> bool:
        """True when /health on the port is our shim (not some other process on it)."""
        url = f"http://{self.cfg.host}:{self.cfg.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return json.load(resp).get("daemon", {}).get("pid") == os.getpid()
        except urllib.error.HTTPError as err:  # 503 "starting": ours until the readiness probe is through
            try:
                return err.code == 503 and json.load(err).get("daemon", {}).get("pid") == os.getpid()
            except (OSError, ValueError, AttributeError):
                return False
        except (OSError, ValueError, AttributeError):
            return False

    def check(self) -> None:
        """Restart workers that died (called between passes)."""
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is None:
                continue
            if time.monotonic() - worker.started_at < RESTART_INTERVAL_S:
                continue
            self.log("http_exited", code=worker.proc.returncode, action="restart", channel=worker.channel)
            self._close_pipe(worker)
            self._spawn(worker)

    @staticmethod
    def _close_pipe(worker: _Worker) -> None:
        if worker.proc is not None and worker.proc.stdout is not None:
            worker.proc.stdout.close()

    def stop(self) -> None:
        live = [w for w in self.workers if w.proc is not None]
        for worker in live:
            if worker.proc.poll() is None:  # type: ignore[union-attr]
                worker.proc.terminate()  # type: ignore[union-attr]
        for worker in live:
            proc = worker.proc
            assert proc is not None
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self._close_pipe(worker)
            worker.proc = None
