"""The Rust client (kernel_abi/rust/shmd-client) against a real daemon.

pytest builds the crate (``cargo build --offline --release``: std only, nothing
fetched), runs its own tests (unit tests, and the ``#[ignore]``d ones against a
daemon started here, whose prefix they read from SHMD_TEST_PREFIX), and drives
``shmd_rs_tool`` and the examples as subprocesses, beside the Python client and
the C client's ``shmd_roundtrip`` on the same records. Skipped with a message
when cargo is not installed.
"""

from __future__ import annotations

import mmap
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kernel_abi import CHANNEL_HEADER, RING_HEADER, hash_str
from ringbuf import Channel, remove_leftovers
from shmd import _codec
from shmd.client import Client
from shmd.samples import SAMPLES
from tests._daemon import DaemonProcess
from tests.test_native import C_DIR, Watch, _parse_rt, _records, _variants, breaker_cycle

ROOT = Path(__file__).resolve().parent.parent
CRATE = ROOT / "kernel_abi" / "rust" / "shmd-client"
RELEASE = CRATE / "target" / "release"
TOOL = RELEASE / "shmd_rs_tool"
CARGO = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
RUN_TIMEOUT_S = 30.0
BUILD_TIMEOUT_S = 300.0
FALLBACK_MARK = -1.0  # outputs[0] of shmd_rs_tool's fallback

pytestmark = pytest.mark.skipif(not Path(CARGO).exists(), reason="cargo not installed: the Rust client is not tested")


def _cargo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CARGO, args[0], "--offline", *args[1:]], cwd=CRATE, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def built() -> Path:
    """The tool and the examples, release build; and the C tools for comparison."""
    proc = _cargo("build", "--release", "--bins", "--examples")
    assert proc.returncode == 0, proc.stderr
    make = subprocess.run(["make", "-s", "-C", str(C_DIR)], capture_output=True, text=True, timeout=180)
    assert make.returncode == 0, make.stderr
    return RELEASE


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    name = f"tr{os.getpid()}x{os.urandom(3).hex()}"
    try:
        channels = "rs,c,py,scheduler,memory,security,rs1,rs2,rs3,rs4,rs5"
        with DaemonProcess(name, "--channels", channels) as proc:
            yield proc
    finally:
        left = remove_leftovers(name)
        assert not left, f"left behind: {left}"


def _run(binary: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], input=stdin, capture_output=True, timeout=RUN_TIMEOUT_S)


def test_cargo_tests_pass_against_the_daemon(built: Path, daemon: DaemonProcess) -> None:
    """The crate's unit tests and its daemon tests (normally ignored) all run and pass."""
    proc = _cargo("test", "--release", "--", "--include-ignored",
                  env={**os.environ, "SHMD_TEST_PREFIX": daemon.prefix})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = sum(int(n) for n in re.findall(r"test result: ok\. (\d+) passed", proc.stdout))
    assert ran >= 25 and " 0 ignored" in proc.stdout and "FAILED" not in proc.stdout, proc.stdout[-4000:]


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("model", ["workload", "threat", "failure", "memory"])
def test_roundtrip_equals_python_and_c(built: Path, daemon: DaemonProcess, model: str, mode: str) -> None:
    """Every model: the Rust client's answers equal the C client's and the Python client's for the
    same records: a raw batch bit for bit; typed calls one by one as the API decodes them (the
    typed answer holds predictedMemory and enum outputs as integers, as the API does)."""
    items = _variants(model, 6)
    records = _records(model, items)
    extra = ["batch"] if mode == "batch" else []
    rust = _run(built / "shmd_rs_tool", "rt", daemon.prefix, "rs", *extra, stdin=records)
    assert rust.returncode == 0 and not rust.stderr, rust.stderr.decode()
    c = _run(C_DIR / "build" / "shmd_roundtrip", "rt", daemon.prefix, "c", *extra, stdin=records)
    assert c.returncode == 0, c.stderr.decode()
    mid = _codec.model_id(model)
    rust_rows, c_rows = _parse_rt(rust.stdout), _parse_rt(c.stdout)
    if mode == "batch":
        assert rust_rows == c_rows
    with Client("py", prefix=daemon.prefix, timeout=10) as client:
        expected = client.predict_many(model, items, no_cache=True)
    for (status, source, outs), (_, _, c_outs), want in zip(rust_rows, c_rows, expected, strict=True):
        assert (status, source) == (0, "daemon")
        want.pop("cacheHit")
        assert want.pop("modelVersion") == 1
        assert _codec.decode_outputs(mid, outs) == _codec.decode_outputs(mid, c_outs) == want


def test_examples_answer_from_the_daemon(built: Path, daemon: DaemonProcess) -> None:
    """The three seed call sites, each answered by the daemon only, with a latency line."""
    examples = built / "examples"
    runs = {
        "predict_workload_via_mld": ("scheduler", "20", r"160 workload predictions: daemon=160 fallback=0 none=0"),
        "predict_memory_access_via_mld": ("memory", "50", r"50 memory predictions: daemon=50 fallback=0 none=0"),
        "detect_threat_via_mld": ("security", "24", r"24 threat checks: daemon=24 fallback=0 none=0"),
    }
    for name, (channel, n, want) in runs.items():
        proc = _run(examples / name, daemon.prefix, channel, n)
        out = proc.stdout.decode()
        assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()
        assert re.search(want, out) and re.search(r"latency: n=\d+ median=[\d.]+ us p99=", out), out
    assert "batch of 24: " in out and "errors=0" in out, out


def test_hash_matches_python(built: Path) -> None:
    """hash_str is kernel_abi.hash_str (FNV-1a 64 over UTF-8)."""
    words = ["agent-123", "disk-0", "é∑", "x" * 128]
    proc = _run(built / "shmd_rs_tool", "hash", *words)
    assert proc.stdout.decode().split() == [f"{hash_str(w):016x}" for w in words]


def test_absent_daemon_answers_by_fallback(built: Path, prefix: str) -> None:
    """No daemon at all: every call is answered by the fallback, marked, with the reason."""
    proc = _run(built / "shmd_rs_tool", "rt", prefix, "scheduler", stdin=_records("workload", _variants("workload", 3)))
    assert proc.returncode == 3
    assert [(s, src, o[0]) for s, src, o in _parse_rt(proc.stdout)] == [(0, "fallback", FALLBACK_MARK)] * 3
    assert re.search(rf"no channel segment /{prefix}\.scheduler: is `shmd serve --prefix {prefix}` running",
                     proc.stderr.decode())  # fmt: skip


def test_breaker_engages_when_the_daemon_stops_and_recovers(built: Path, prefix: str) -> None:
    """Daemon stopped: the fallback answers at once; restarted on the same prefix: the daemon again."""
    breaker_cycle(built / "shmd_rs_tool", prefix, f"{FALLBACK_MARK!r}")


def _poke(prefix: str, offset: int, value: int) -> int:
    """Write one u64 at ``offset`` of the live channel segment; the previous value."""
    fd = os.open(f"/dev/shm/{prefix}.scheduler", os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as buf:
            word = np.frombuffer(buf, np.uint64, 1, offset)
            old = int(word[0])
            word[0] = value
            del word
            return old
    finally:
        os.close(fd)


_PRODUCED_AFTER_TAIL = RING_HEADER.fields["produced"][1] - RING_HEADER.fields["tail"][1]


def _peek(prefix: str, offset: int) -> int:
    fd = os.open(f"/dev/shm/{prefix}.scheduler", os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as buf:
            return int.from_bytes(buf[offset : offset + 8], "little")
    finally:
        os.close(fd)


def _scribble_until_reported(watch: Watch, prefix: str, offset: int, value: int, timeout: float = 5.0) -> str:
    """Write ``value`` at ``offset`` until the client reports a fallback; that line.

    The daemon owns the completion tail and rewrites it on every publish: a scribble landing
    while an answer is in flight can be overwritten before the client reads it, so one write
    alone would make the test depend on timing.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _peek(prefix, offset) != value:
            _poke(prefix, offset, value)
        try:
            return watch.expect("fallback", timeout=0.02)
        except AssertionError:
            continue
    raise AssertionError(f"the client did not report the scribbled word within {timeout}s")


def _cq_tail_offset(prefix: str) -> int:
    fd = os.open(f"/dev/shm/{prefix}.scheduler", os.O_RDONLY)
    try:
        with mmap.mmap(fd, CHANNEL_HEADER.itemsize, prot=mmap.PROT_READ) as buf:
            cq_offset = int(np.frombuffer(buf, CHANNEL_HEADER, 1)[0]["cq_offset"])
    finally:
        os.close(fd)
    return cq_offset + RING_HEADER.fields["tail"][1]


@pytest.mark.parametrize("what", ["channel magic", "completion tail"])
def test_hostile_segment_falls_back_not_panics(built: Path, prefix: str, what: str) -> None:
    """A scribbled header word or a completion tail past capacity: the client falls back (never
    panics), names what it found, and switches back once the channel is sound again."""
    with DaemonProcess(prefix, "--channels", "scheduler"):
        watch = Watch(built / "shmd_rs_tool", prefix, 6.0)
        try:
            watch.expect("daemon", timeout=15)
            if what == "channel magic":
                good = _poke(prefix, 0, 0xDEADBEEF)
                line = watch.expect("fallback", timeout=5)
                assert "Corrupt(" in line and "magic=0xdeadbeef found" in line, line
                time.sleep(0.3)  # probes (cool-down 100 ms) refuse the segment meanwhile
                _poke(prefix, 0, good)
            else:
                offset = _cq_tail_offset(prefix)
                line = _scribble_until_reported(watch, prefix, offset, 1 << 40)
                assert "completion ring of" in line and "is corrupt" in line and f"tail={1 << 40}" in line, line
                # The daemon's own tail is its count of published answers (a copy taken before the
                # scribble is stale if an answer was published since); the probe re-attaches from the head.
                _poke(prefix, offset, _peek(prefix, offset + _PRODUCED_AFTER_TAIL))
            watch.expect("daemon", timeout=5)
            stats = watch.finish()  # exit 0, nothing on stderr: no panic
            assert "recoveries=1" in stats, stats
        finally:
            watch.kill()


def test_attach_refusals_name_the_problem(built: Path, daemon: DaemonProcess, prefix: str) -> None:
    """A channel held elsewhere names the holder's pid (the fallback answers meanwhile)."""
    one = _records("workload", [SAMPLES["workload"]])
    with Client("rs", prefix=daemon.prefix):
        proc = _run(built / "shmd_rs_tool", "rt", daemon.prefix, "rs", stdin=one)
    assert proc.returncode == 3
    assert f"channel 'rs' (prefix '{daemon.prefix}') is held by pid {os.getpid()}" in proc.stderr.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a segment another owner")
def test_a_segment_owned_by_another_uid_is_refused(built: Path, prefix: str) -> None:
    """A segment someone else created is refused before it is mapped (the fallback answers, saying
    why), unless SHMD_DAEMON_UID names its owner: the C and Python clients' rule. A caller without
    permission is told the owner, group and mode."""
    one = _records("workload", [SAMPLES["workload"]])
    ch = Channel.create(prefix, "a", sq_capacity=2)
    try:
        os.fchown(ch.fd, 4242, -1)  # as if uid 4242 had made it
        env = {k: v for k, v in os.environ.items() if k != "SHMD_DAEMON_UID"}
        refused = subprocess.run([TOOL, "rt", prefix, "a"], input=one, capture_output=True, env=env, timeout=30)
        assert refused.returncode == 3
        assert f"segment /{prefix}.a is not trusted: owner uid=4242 mode=0600 found" in refused.stderr.decode()
        trusted = subprocess.run([TOOL, "rt", prefix, "a"], input=one, capture_output=True, timeout=30,
                                 env={**env, "SHMD_DAEMON_UID": "4242"})  # fmt: skip
        assert trusted.returncode == 3 and "not trusted" not in trusted.stderr.decode()  # past the owner check
        bad_env = subprocess.run([TOOL, "rt", prefix, "a"], input=one, capture_output=True, timeout=30,
                                 env={**env, "SHMD_DAEMON_UID": "shmd"})  # fmt: skip
        assert 'SHMD_DAEMON_UID must be a numeric uid: SHMD_DAEMON_UID="shmd"' in bad_env.stderr.decode()
        # A caller that may not open it is told who may.
        stranger = subprocess.run([TOOL, "rt", prefix, "a"], input=one, capture_output=True, timeout=30,
                                  user=4243, group=4243)  # fmt: skip
        assert f"cannot open /{prefix}.a as uid 4243: owner uid=4242 gid=0 mode=0600; run as uid 4242" in (
            stranger.stderr.decode()
        )
    finally:
        ch.close()
        ch.unlink()
