"""The systemd notify protocol, for real: a datagram socket in the test, `shmd serve` sending to it.

The socket asks for the sender's credentials (SO_PASSCRED) the way systemd
does for ``NotifyAccess=main``, so every message is checked to come from the
daemon's own pid, not from the HTTP shim it starts.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import ringbuf
from shmd._notify import Notifier
from shmd._stats_segment import StatsSegment

from ._http_daemon import ROOT, free_port, unique_prefix

pytestmark = pytest.mark.timeout(120)

WATCHDOG_USEC = 600_000  # the daemon pings every 300 ms
START_TIMEOUT_S = 60.0
_UCRED = struct.Struct("iII")  # pid, uid, gid


@dataclass
class Message:
    at: float  # time.monotonic() when received
    pid: int  # the sender, from SCM_CREDENTIALS
    fields: dict[str, str]


class NotifySocket:
    """What systemd holds: a datagram socket that learns each sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.address = address

    def receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except TimeoutError:
            return None
        pid = next(
            _UCRED.unpack(d[: _UCRED.size])[0]
            for level, kind, d in ancdata
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        )
        fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
        return Message(time.monotonic(), pid, fields)

    def until(self, key: str, timeout: float) -> tuple[Message, list[Message]]:
        """Messages up to and including the first that sets ``key``."""
        seen: list[Message] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is None:
                break
            seen.append(msg)
            if key in msg.fields:
                return msg, seen
        raise AssertionError(f"no {key}= within {timeout}s; received {[m.fields for m in seen]}")

    def collect(self, seconds: float) -> list[Message]:
        seen, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None:
                seen.append(msg)
        return seen

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("\0"):
            Path(self.address).unlink(missing_ok=True)


def _serve(prefix: str, notify_socket: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    cmd = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--channels", "a,b", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _probed(prefix: str) -> int:
    """Predictions the start-up probe had answered (0: not through), from the daemon's stats segment."""
    stats = StatsSegment.attach(prefix)
    try:
        started, answered = (int(v) for v in stats.arrays["startup"])
        return answered if started else 0
    finally:
        stats.close()


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # a SIGSTOPped daemon would never see the SIGTERM
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    return proc.returncode, err


def test_ready_after_a_prediction_then_watchdog_then_stopping_over_http() -> None:
    prefix, port = unique_prefix("nt"), free_port()
    sock = NotifySocket(f"\0shmd-test-{secrets.token_hex(6)}")  # an abstract socket, as "@name"
    proc = _serve(prefix, "@" + sock.address[1:], "--port", str(port))
    try:
        ready, before = sock.until("READY", START_TIMEOUT_S)
        # READY=1 only once every model went the whole way (HTTP, ring, model, answer).
        assert _probed(prefix) >= 16
        assert ready.fields["READY"] == "1"
        assert "probe answered via http 127.0.0.1" in ready.fields["STATUS"]
        assert all(m.pid == proc.pid for m in before)

        pings = [m for m in sock.collect(2.0) if "WATCHDOG" in m.fields]
        assert all(m.pid == proc.pid and m.fields["WATCHDOG"] == "1" for m in pings)
        gaps = [b.at - a.at for a, b in zip([ready, *pings], pings, strict=False)]
        # Half the timeout apart (rate-limited, never a flood) and never the whole timeout.
        assert len(pings) >= 3, gaps
        assert min(gaps[1:]) >= WATCHDOG_USEC / 2e6 * 0.9, gaps
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps

        # A stopped loop sends no pings: systemd would kill and restart it.
        os.kill(proc.pid, signal.SIGSTOP)
        sock.collect(0.1)  # a ping sent just before the stop may still be queued
        assert [m.fields for m in sock.collect(1.5 * WATCHDOG_USEC / 1e6)] == []
        os.kill(proc.pid, signal.SIGCONT)
        sock.until("WATCHDOG", WATCHDOG_USEC / 1e6 * 2)

        proc.terminate()
        stopping, _ = sock.until("STOPPING", 10)
        assert stopping.pid == proc.pid and stopping.fields["STOPPING"] == "1"
    finally:
        code, err = _stop(proc)
        sock.close()
    assert code == 0, err
    assert not ringbuf.remove_leftovers(prefix)
    assert "event=notified ready=1" in err
    assert not ringbuf.remove_leftovers(prefix)


def test_ready_without_http_probes_its_own_channel_over_a_path_socket(tmp_path: Path) -> None:
    prefix = unique_prefix("nt")
    sock = NotifySocket(str(tmp_path / "notify"))
    proc = _serve(prefix, sock.address, "--no-http")
    try:
        ready, _ = sock.until("READY", START_TIMEOUT_S)
        assert _probed(prefix) == 16  # every model, one row then three
        assert "probe answered via the startup-probe channel" in ready.fields["STATUS"]
        assert ready.pid == proc.pid
    finally:
        code, err = _stop(proc)
        sock.close()
    assert code == 0, err
    assert not ringbuf.remove_leftovers(prefix)


def test_watchdog_is_off_without_watchdog_usec_or_for_another_pid() -> None:
    assert Notifier({"NOTIFY_SOCKET": "@x"}).watchdog_ns == 0
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_ns == 0
    own = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(own).watchdog_ns == 1_000_000_000
    assert not Notifier({}).enabled and not Notifier({}).send(ready=1)
