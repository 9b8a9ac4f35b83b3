"""Lost wake-ups fail loudly instead of hiding behind the daemon's sleep timeout.

A sleeping daemon still wakes on a safety-net timeout, so a request whose
wake-up was lost is answered late, not never: a test that only waits for the
answer passes. These tests look at the protocol itself (the daemon announces
its sleep with NEED_WAKEUP on every SQ) and time round trips with the safety
net raised to seconds, where one lost wake-up costs far more than the bound.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel_abi import RING_NEED_WAKEUP
from ringbuf import _core as core
from ringbuf._futex import SYS_FUTEX_WAITV
from shmd._config import Config
from shmd._loop import LOOP_EARLY_WAKES, LOOP_HANDOFFS, LOOP_SLEEPS, LOOP_TIMEOUT_RESCUES
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

SAFETY_NET_MS = 10_000  # the daemon's sleep timeout here: a lost wake-up costs 10 s
TRIPS = 20


def _await_sleep(c: Client) -> None:
    deadline = time.monotonic() + 5
    while not c.channel.sq.hdr32[core.FLAGS] & RING_NEED_WAKEUP:  # asleep, so only the doorbell wakes it
        assert time.monotonic() < deadline, "the idle daemon never set NEED_WAKEUP"
        time.sleep(0.001)


def test_an_idle_daemon_announces_its_sleep_on_every_sq(prefix: str) -> None:
    with DaemonProcess(prefix, "--channels", "a,b"), Client("a", prefix=prefix) as a, Client("b", prefix=prefix) as b:
        for c in (a, b):
            flags = c.channel.sq.hdr32
            deadline = time.monotonic() + 5
            while not flags[core.FLAGS] & RING_NEED_WAKEUP:  # spin (100 µs) over, the daemon must sleep
                assert time.monotonic() < deadline, f"channel {c.channel.name}: the idle daemon never set NEED_WAKEUP"
                time.sleep(0.001)


def _words_slept_on(pid: int) -> int | None:
    """How many words a thread of ``pid`` sleeps on in ``futex_waitv`` (its second argument); None if none does."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "syscall").read_text().split()
        except OSError as err:  # /proc/PID/syscall needs ptrace access to the daemon
            pytest.skip(f"cannot read {task}/syscall: {err}")
        if fields and fields[0] == str(SYS_FUTEX_WAITV):
            return int(fields[2], 16)
    return None


def test_once_ready_the_idle_daemon_sleeps_on_its_callers_words_only(prefix: str) -> None:
    """Without the shim the start-up probe has a channel of its own; once the probe is through it
    leaves the sleep set (every word of ``futex_waitv`` costs the kernel a key lookup per sleep)."""
    with DaemonProcess(prefix, "--channels", "a,b") as daemon, Client("a", prefix=prefix) as a:
        a.predict("workload", SAMPLES["workload"])
        deadline = time.monotonic() + 10
        while (words := _words_slept_on(daemon.pid)) is None:  # idle, it sleeps in futex_waitv
            assert time.monotonic() < deadline, "the idle daemon never slept in futex_waitv"
            time.sleep(0.001)
    assert words == 2, f"the idle daemon sleeps on {words} SQ words: 2 expected (channels a and b; no probe's)"


def test_shmd_models_load_wakes_the_idle_daemon(prefix: str) -> None:
    """``shmd models load`` writes its request into the stats segment, which a sleeping daemon does
    not watch: the CLI rings a channel's doorbell so the daemon reads it now, not when its sleep
    times out. The wake-up finds no request in the SQ: an early wake, counted (LOOP_EARLY_WAKES);
    with the sleep's safety net at 10 s, nothing else ends that sleep during the CLI's run."""
    env = {"SHMD_SLEEP_TIMEOUT_MS": str(SAFETY_NET_MS)}
    with DaemonProcess(prefix, "--channels", "a", env=env), Client("a", prefix=prefix, timeout=30) as c:
        c.predict("workload", SAMPLES["workload"])
        seg = StatsSegment.attach(prefix)
        try:
            loop = seg.arrays["loop"]
            _await_sleep(c)
            before = int(loop[LOOP_EARLY_WAKES])
            cli = subprocess.run(  # version 1 serves already: answered by the next housekeeping, nothing loaded
                [sys.executable, "-m", "shmd.cli", "models", "load", "workload", "1", "--prefix", prefix],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            woken = int(loop[LOOP_EARLY_WAKES]) - before
        finally:
            seg.close()
    assert cli.returncode == 0, cli.stderr
    assert woken >= 1, "the idle daemon answered `shmd models load` without being woken: its sleep timed out"


def test_requests_to_a_sleeping_daemon_wake_it(prefix: str) -> None:
    env = {"SHMD_SLEEP_TIMEOUT_MS": str(SAFETY_NET_MS)}
    with DaemonProcess(prefix, "--channels", "a", env=env), Client("a", prefix=prefix, timeout=30) as c:
        c.predict("memory", SAMPLES["memory"], no_cache=True)
        slowest = 0.0
        for _ in range(TRIPS):
            _await_sleep(c)
            t0 = time.monotonic()
            c.predict("memory", SAMPLES["memory"], no_cache=True)
            slowest = max(slowest, time.monotonic() - t0)
        # A generous bound: a woken daemon answers in well under a millisecond; a lost wake-up takes 10 s.
        assert slowest < 2.0, f"a round trip to a sleeping daemon took {slowest:.3f} s: a lost wake-up"


def test_the_pass_a_wake_up_began_hands_the_cpu_back_and_no_other(prefix: str) -> None:
    """The hand-off rule (``_loop.finish``): a pass that a client's wake-up began ends with one
    yield of the CPU (the wake-up put the daemon on that client's CPU, where the client waits);
    the passes after it, which drain what is already there, do not yield.

    Each trip wakes the sleeping daemon with more records than one pass takes: two passes, the
    first begun by the wake-up, the second by records already waiting.
    """
    env = {"SHMD_SLEEP_TIMEOUT_MS": str(SAFETY_NET_MS)}  # no timeout ends a sleep in this test
    batch = Config().max_batch + 7  # two passes (the SQ and CQ hold both: 1,024 each)
    with DaemonProcess(prefix, "--channels", "a", env=env), Client("a", prefix=prefix, timeout=30) as c:
        items = [SAMPLES["memory"]] * batch
        c.predict_many("memory", items)
        seg = StatsSegment.attach(prefix)
        try:
            loop = seg.arrays["loop"]
            before = int(loop[LOOP_HANDOFFS])
            for _ in range(5):
                _await_sleep(c)
                assert len(c.predict_many("memory", items, no_cache=True)) == batch
            handoffs = int(loop[LOOP_HANDOFFS]) - before
        finally:
            seg.close()
    assert handoffs == 5, f"5 trips that each woke the daemon for two passes: {handoffs} hand-offs (expected 5)"


def test_no_sleep_ends_by_timeout_with_work_waiting(prefix: str) -> None:
    """The daemon counts sleeps its safety net ended with requests waiting: lost wake-ups. Expected: none."""
    env = {"SHMD_SLEEP_TIMEOUT_MS": "50"}  # short, so a lost wake-up would be rescued (and counted) quickly
    with DaemonProcess(prefix, "--channels", "a,b", env=env), Client("a", prefix=prefix) as a, \
            Client("b", prefix=prefix) as b:  # fmt: skip
        seg = StatsSegment.attach(prefix)
        try:
            loop = seg.arrays["loop"]
            for i in range(TRIPS):
                time.sleep(0.01)  # the daemon's spin (100 µs) is over: it sleeps
                (a, b)[i % 2].predict("workload", SAMPLES["workload"], no_cache=True)
            time.sleep(0.2)  # the daemon sleeps (and times out) a few more times, idle
            assert loop[LOOP_SLEEPS] >= TRIPS, f"the daemon slept {loop[LOOP_SLEEPS]} times in {TRIPS} idle trips"
            assert loop[LOOP_TIMEOUT_RESCUES] == 0, f"{loop[LOOP_TIMEOUT_RESCUES]} wake-ups rescued by the timeout"
        finally:
            seg.close()


@pytest.mark.parametrize("no_cache", [True, False], ids=["miss", "hit"])
def test_sparse_traffic_keeps_the_heartbeat_fresh(prefix: str, no_cache: bool) -> None:
    """One request every 60 ms wakes every sleep of the loop; housekeeping (the heartbeat clients
    trust, the watchdog, control commands) must still run every few housekeeping periods.

    A compiled pass never returns to Python by itself, so a ``step`` call that slept and woke
    MAX_INNER_PASSES times kept the heartbeat ~1.5 s stale here (the clients' limit is 2 s).
    """
    with DaemonProcess(prefix, "--channels", "a"), Client("a", prefix=prefix) as c:
        header = c.channel.header
        c.predict("workload", SAMPLES["workload"])
        oldest = 0.0
        for _ in range(25):
            time.sleep(0.06)
            c.predict("workload", SAMPLES["workload"], no_cache=no_cache)
            oldest = max(oldest, (time.monotonic_ns() - int(header["daemon_heartbeat_ns"])) / 1e9)
        # Fresh is ~0.15 s (a housekeeping period plus one sleep); generous for a loaded machine.
        assert oldest < 0.75, f"the daemon's heartbeat was {oldest:.3f} s old under sparse traffic"
