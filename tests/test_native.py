"""The C client (kernel_abi/c) against a real daemon: round trips, fallback, corruption, sanitizers.

pytest builds the library, the examples and the test tools with ``make -C kernel_abi/c``
(and ``asan``), then drives the binaries as subprocesses. Every subprocess and every
wait is bounded; every daemon runs under a prefix unique to the test.
"""

from __future__ import annotations

import mmap
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, CHANNEL_HEADER, PAYLOADS, REQ_NO_CACHE, REQUESTS, ModelId, hash_str
from ringbuf import Channel, remove_leftovers
from shmd import _codec
from shmd.client import Client
from shmd.samples import SAMPLES
from tests._daemon import DaemonProcess

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "kernel_abi" / "c"
BUILDS = {"release": C_DIR / "build", "asan": C_DIR / "build" / "asan"}
RUN_TIMEOUT_S = 30.0
FALLBACK_MARK = -1.0  # outputs[0] of shmd_roundtrip's fallback
# ASan needs its shadow mappings; leak checking under ptrace-less CI is fine, but be explicit.
SAN_ENV = {**os.environ, "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"}


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Both builds of the C client, examples and tools."""
    for target in ([], ["asan"]):
        proc = subprocess.run(["make", "-s", "-C", str(C_DIR), *target], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"make {target} failed:\n{proc.stdout}\n{proc.stderr}"
    return BUILDS


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """One daemon for the round-trip tests (starting one costs ~0.5 s)."""
    name = f"tn{os.getpid()}x{os.urandom(3).hex()}"
    try:
        with DaemonProcess(name, "--channels", "c,py,scheduler,security") as proc:
            yield proc
    finally:
        left = remove_leftovers(name)
        assert not left, f"left behind: {left}"


def _variants(model: str, n: int) -> list[dict[str, Any]]:
    """``n`` valid inputs for ``model``: the sample with one feature varied."""
    base = SAMPLES[model]
    out = []
    for i in range(n):
        f = {**base}
        x = (i + 1) / (n + 1)
        if model == "workload":
            f["currentCpu"] = x
            f["historicalCpu"] = [min(1.0, v * (0.5 + x)) for v in base["historicalCpu"]]
        elif model == "threat":
            f["metrics"] = {**base["metrics"], "errorRate": x, "resourceUsage": 1 - x}
        elif model == "failure":
            f["healthScore"] = x
            f["trend"] = x - 0.5
        else:
            f["localityScore"] = x
            f["currentAddress"] = 1 - x
        out.append(f)
    return out


def _records(model: str, items: list[dict[str, Any]]) -> bytes:
    """REQUEST records as raw bytes for the C tools (ids and times are set by the client)."""
    mid = _codec.model_id(model)
    records = np.zeros(len(items), REQUESTS[mid])
    records["payload"] = _codec.encode_payloads(mid, items)
    records["model_id"] = mid
    records["abi_version"] = ABI_VERSION
    records["payload_len"] = PAYLOADS[mid].itemsize
    records["flags"] = REQ_NO_CACHE
    return records.tobytes()


def _run(
    binary: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], input=stdin, capture_output=True, timeout=RUN_TIMEOUT_S, env=env)


def _parse_rt(stdout: bytes) -> list[tuple[int, str, list[float]]]:
    rows = []
    for line in stdout.decode().splitlines():
        idx, status, _flags, source, *outs = line.split()
        rows.append((int(status), source, [float(v) for v in outs]))
        assert int(idx) == len(rows) - 1
    return rows


@pytest.mark.parametrize("build", ["release", "asan"])
@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("model", ["workload", "threat", "failure", "memory"])
def test_roundtrip_matches_python_client(built: dict[str, Path], daemon: DaemonProcess, model: str, mode: str,
                                         build: str) -> None:
    """Every model: the C client's predictions equal the Python client's for the same inputs."""
    items = _variants(model, 6)
    args = ["rt", daemon.prefix, "c"] + (["batch"] if mode == "batch" else [])
    proc = _run(built[build] / "shmd_roundtrip", *args, stdin=_records(model, items),
                env=SAN_ENV if build == "asan" else None)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not proc.stderr, proc.stderr.decode()  # sanitizers report on stderr
    rows = _parse_rt(proc.stdout)
    with Client("py", prefix=daemon.prefix, timeout=10) as client:
        expected = client.predict_many(model, items, no_cache=True)
    mid = _codec.model_id(model)
    assert len(rows) == len(items)
    for (status, source, outs), want in zip(rows, expected, strict=True):
        assert (status, source) == (0, "daemon")
        want.pop("cacheHit")
        assert want.pop("modelVersion") == 1
        assert _codec.decode_outputs(mid, outs) == want


@pytest.mark.parametrize("build", ["release", "asan"])
def test_examples_run_clean(built: dict[str, Path], daemon: DaemonProcess, build: str) -> None:
    """Both examples act on daemon answers only, report latency, and pass the sanitizers."""
    env = SAN_ENV if build == "asan" else None
    sched = _run(built[build] / "scheduler", daemon.prefix, "scheduler", "8", "20", env=env)
    assert sched.returncode == 0, sched.stderr.decode()
    out = sched.stdout.decode()
    assert "160 predictions" in out and re.search(r"prediction latency: n=160 median=[\d.]+ us p99=", out), out
    assert not sched.stderr
    sec = _run(built[build] / "security_monitor", daemon.prefix, "security", "20", "32", env=env)
    assert sec.returncode == 0, sec.stderr.decode()
    out = sec.stdout.decode()
    assert "fallback=0" in out and "errors=0" in out, out
    assert re.search(r"isolate=\d+ terminate=\d+", out) and "batch latency: n=20" in out, out
    assert not sec.stderr


def test_hash_matches_python(built: dict[str, Path]) -> None:
    """shmd_hash_str is kernel_abi.hash_str (FNV-1a 64 over UTF-8)."""
    words = ["agent-123", "disk-0", "é∑", "x" * 128]
    proc = _run(built["release"] / "shmd_roundtrip", "hash", *words)
    assert proc.stdout.decode().split() == [f"{hash_str(w):016x}" for w in words]


# ------------------------------------------------------------ circuit breaker


class Watch:
    """``shmd_roundtrip watch``: one prediction every 2 ms; a line on every source change."""

    def __init__(self, binary: Path, prefix: str, seconds: float, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(binary), "watch", prefix, "scheduler", str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(_records("workload", [SAMPLES["workload"]]))
        self.proc.stdin.close()
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode().rstrip("\n"))

    def expect(self, source: str, timeout: float = 10.0) -> str:
        """The next line announcing ``source``; fails after ``timeout`` s."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(f"source={source}"):
                return line
        raise AssertionError(f"no source={source} within {timeout}s (exit={self.proc.poll()})")

    def finish(self, timeout: float = 15.0) -> str:
        """Wait for the end; its stats line. The process must exit 0 with a clean stderr."""
        self.proc.wait(timeout)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        assert self.proc.returncode == 0 and not err, err
        while True:
            line = self.lines.get(timeout=5)
            if line.startswith("stats "):
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def breaker_cycle(tool: Path, prefix: str, mark: str) -> None:
    """Daemon stopped under a ``watch`` of ``tool``: the fallback (its outputs[0] printed as ``mark``)
    answers at once; restarted on the same prefix: the daemon again. Shared with the Rust client's test."""
    first = DaemonProcess(prefix, "--channels", "scheduler")
    watch = Watch(tool, prefix, 8.0)
    try:
        watch.expect("daemon")
        first.stop()
        line = watch.expect("fallback", timeout=5)
        assert f"out0={mark} " in line and ("daemon_pid=0" in line or "no channel" in line), line
        with DaemonProcess(prefix, "--channels", "scheduler"):
            watch.expect("daemon", timeout=5)
            stats = watch.finish()
        counts = dict(kv.split("=") for kv in stats.split()[1:])
        assert int(counts["recoveries"]) >= 1 and int(counts["trips"]) >= 1, stats
    finally:
        watch.kill()
        first.stop()


def test_fallback_engages_when_daemon_stops_and_recovers(built: dict[str, Path], prefix: str) -> None:
    """Daemon stopped: the fallback answers at once; restarted on the same prefix: the daemon again."""
    breaker_cycle(built["release"] / "shmd_roundtrip", prefix, f"{FALLBACK_MARK:g}")


def test_absent_daemon_answers_by_fallback(built: dict[str, Path], prefix: str) -> None:
    """No daemon at all: every call is answered by the fallback, marked, with the reason."""
    proc = _run(built["release"] / "shmd_roundtrip", "rt", prefix, "scheduler",
                stdin=_records("workload", _variants("workload", 3)))
    assert proc.returncode == 3
    rows = _parse_rt(proc.stdout)
    assert [(s, src, o[0]) for s, src, o in rows] == [(0, "fallback", FALLBACK_MARK)] * 3
    assert re.search(rf"no channel segment /{prefix}\.scheduler: is `shmd serve --prefix {prefix}` running",
                     proc.stderr.decode())


def test_corrupted_channel_header_falls_back_then_recovers(built: dict[str, Path], prefix: str) -> None:
    """Bad magic written into a live segment: the (sanitized) client falls back, never crashes, and
    switches back once the header is valid again."""
    with DaemonProcess(prefix, "--channels", "scheduler"):
        watch = Watch(built["asan"] / "shmd_roundtrip", prefix, 6.0, env=SAN_ENV)
        try:
            watch.expect("daemon", timeout=15)
            fd = os.open(f"/dev/shm/{prefix}.scheduler", os.O_RDWR)
            try:
                with mmap.mmap(fd, CHANNEL_HEADER.itemsize) as buf:
                    words = np.frombuffer(buf, np.uint64, 1)
                    good = int(words[0])
                    words[0] = 0xDEADBEEF
                    line = watch.expect("fallback", timeout=5)
                    assert "code=-4" in line and "magic=0xdeadbeef found" in line, line
                    time.sleep(0.3)  # probes (cool-down 100 ms) refuse the segment meanwhile
                    words[0] = good
                    del words
            finally:
                os.close(fd)
            watch.expect("daemon", timeout=5)
            stats = watch.finish()
            assert "recoveries=1" in stats, stats
        finally:
            watch.kill()


def test_attach_refusals_name_the_problem(built: dict[str, Path], daemon: DaemonProcess, prefix: str) -> None:
    """A held channel names the holder's pid; a segment of another ABI version is refused, not crashed on."""
    tool = built["asan"] / "shmd_roundtrip"
    one = _records("workload", [SAMPLES["workload"]])
    with Client("c", prefix=daemon.prefix):
        proc = _run(tool, "rt", daemon.prefix, "c", stdin=one, env=SAN_ENV)
    assert proc.returncode == 3
    assert f"channel 'c' (prefix '{daemon.prefix}') is held by pid {os.getpid()}" in proc.stderr.decode()
    ch = Channel.create(prefix, "old", sq_capacity=8)
    try:
        ch.header["abi_version"] = ABI_VERSION + 1
        proc = _run(tool, "rt", prefix, "old", stdin=one, env=SAN_ENV)
        assert proc.returncode == 3
        assert f"speaks another ABI: abi_version={ABI_VERSION + 1} found, {ABI_VERSION} expected" in (
            proc.stderr.decode()
        )
    finally:
        ch.unlink()
        ch.close()


def test_model_ids_cover_the_abi() -> None:
    """The round-trip test covers every model the ABI defines."""
    assert {m.name.lower() for m in ModelId} == set(SAMPLES)
