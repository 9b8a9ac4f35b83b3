"""`shmd serve` and its HTTP shim child: a failed start is an error, a dead shim comes back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import ringbuf
from shmd._config import default_http_workers, http_channels

from ._http_daemon import free_port, unique_prefix

pytestmark = pytest.mark.timeout(120)


def _serve(prefix: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--port", str(port), "--channels", "a"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return json.load(resp)
    except OSError:
        return None


def test_port_in_use_fails_serve_with_the_reason() -> None:
    prefix, port = unique_prefix("sv"), free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = _serve(prefix, port)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2
    assert "address already in use" in err
    assert f"shmd serve: the HTTP shim exited with code 2 before listening on 127.0.0.1:{port}" in err
    assert "event=ready" not in err
    assert not ringbuf.leftovers(prefix)


def test_a_dead_shim_is_restarted() -> None:
    prefix, port = unique_prefix("sv"), free_port()
    proc = _serve(prefix, port)
    lines: list[str] = []  # read as it comes: a full pipe would block the daemon's writes
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    channels = http_channels(default_http_workers())  # serve runs the default number of workers

    def restarted(channel: str) -> bool:
        return any("event=http_exited code=-9 action=restart" in ln and f"channel={channel}\n" in ln for ln in lines)

    try:
        deadline = time.monotonic() + 90
        while not any("event=ready" in line for line in lines):  # serve saw its shim answer
            assert proc.poll() is None and time.monotonic() < deadline, f"serve did not come up: {lines}"
            time.sleep(0.1)
        assert _health(port) is not None
        shims = subprocess.run(["pgrep", "-f", f"http_shim --prefix {prefix} "], capture_output=True, text=True)
        pids = [int(pid) for pid in shims.stdout.split()]
        assert len(pids) == len(channels), f"one shim per worker: {pids}"
        for pid in pids:  # every worker: while one lives, the port still answers
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert _health(port) is None
        deadline = time.monotonic() + 60  # restarts are at most every 5 s; a loaded machine starts slowly
        while (health := _health(port)) is None:
            assert time.monotonic() < deadline, f"the shim was not restarted: {lines}"
            time.sleep(0.1)
        assert health["daemon"]["pid"] == proc.pid
        while not all(restarted(ch) for ch in channels):  # each worker, on its own channel
            assert time.monotonic() < deadline, f"not every shim was restarted: {lines}"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(5)
    assert proc.returncode == 0
    assert all(restarted(ch) for ch in channels), lines
    assert not ringbuf.leftovers(prefix)
