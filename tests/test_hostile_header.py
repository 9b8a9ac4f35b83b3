"""Header fuzz: every word of a live channel's headers x hostile values never stops the daemon.

One daemon serves a hostile channel ``h`` and a witness channel ``w``. For every u64
word that holds a field of the channel header and of both ring headers, and for each
hostile value, a client holding ``h`` writes the value while the daemon serves; then
the hostile client may get an answer or a ShmdError (nothing else), the witness is
answered, the daemon's gauges stay sane, and once the hostile client detaches ``h``
is usable again (re-created empty by the daemon when it was damaged).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import ringbuf
from kernel_abi import CHANNEL_HEADER, RING_HEADER
from shmd import ShmdError, _snapshot
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

RECOVER_S = 5.0  # the daemon looks at every channel at least every 100 ms


def _field_words(dtype: np.dtype) -> list[int]:
    """Indices of the u64 words that hold a field (padding words are nobody's)."""
    return sorted({dtype.fields[name][1] // 8 for name in dtype.names})


_rng = np.random.default_rng(20261130)
VALUES: dict[str, Callable[[int], int]] = {
    "zero": lambda cur: 0,
    "one": lambda cur: 1,
    "back_3": lambda cur: (cur - 3) % 2**64,
    "far_ahead": lambda cur: (cur + 1_000_003) % 2**64,
    "2^63": lambda cur: 2**63,
    "all_ones": lambda cur: 2**64 - 1,
    "random": lambda cur: int(_rng.integers(0, 2**64, dtype=np.uint64)),
}

REGIONS = {
    "channel": _field_words(CHANNEL_HEADER),
    "sq": _field_words(RING_HEADER),
    "cq": _field_words(RING_HEADER),
}


def _words(client: Client, region: str) -> np.ndarray:
    ch = client.channel
    if region == "channel":
        return ch.header.reshape(1).view(np.uint64)
    return (ch.sq if region == "sq" else ch.cq).hdr64


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    prefix = f"fz{os.getpid()}x{secrets.token_hex(3)}"
    try:
        with DaemonProcess(prefix, "--channels", "h,w") as proc:
            yield proc
        assert proc.proc.returncode == 0, proc.log()
    finally:
        left = ringbuf.remove_leftovers(prefix)
    assert not left, f"daemon left {left}"


def _poke(witness: Client) -> None:
    """Wake the daemon (it keeps house in the first quiet moment once 50 ms have passed, else within 100 ms)."""
    assert 0 <= witness.predict("memory", SAMPLES["memory"])["nextAddress"] <= 1


def _housekeeping_since(
    stats: StatsSegment, t_ns: int, witness: Client, label: str, daemon: DaemonProcess
) -> None:
    deadline = time.monotonic() + RECOVER_S
    while int(stats.arrays["heartbeat"][0]) <= t_ns:
        assert daemon.proc.poll() is None, f"{label}: daemon exited\n{daemon.log()}"
        assert time.monotonic() < deadline, f"{label}: no housekeeping for {RECOVER_S}s\n{daemon.log()}"
        time.sleep(0.011)
        _poke(witness)


def _usable(prefix: str, witness: Client, label: str, daemon: DaemonProcess) -> None:
    """``h`` answers again within RECOVER_S (the daemon re-creates it if it was damaged)."""
    deadline = time.monotonic() + RECOVER_S
    while True:
        try:
            with Client("h", prefix=prefix, timeout=1.0) as fresh:
                assert 0 <= fresh.predict("memory", SAMPLES["memory"])["nextAddress"] <= 1
            return
        except ShmdError as err:
            assert time.monotonic() < deadline, f"{label}: channel h never usable again: {err}\n{daemon.log()}"
            time.sleep(0.011)
            _poke(witness)


@pytest.mark.parametrize("region", list(REGIONS))
def test_every_header_word_times_hostile_values(daemon: DaemonProcess, region: str) -> None:
    prefix = daemon.prefix
    stats = StatsSegment.attach(prefix)
    witness = Client("w", prefix=prefix, timeout=10.0)
    outcomes: dict[str, int] = {"answered": 0, "refused": 0}
    try:
        for word in REGIONS[region]:
            for name, value in VALUES.items():
                label = f"{region} word {word} = {name}"
                with Client("h", prefix=prefix, timeout=0.05) as hostile:
                    words = _words(hostile, region)
                    written = time.monotonic_ns()
                    words[word] = value(int(words[word]))
                    cpu = {**SAMPLES["workload"], "currentCpu": (word % 10) / 10}
                    assert 0 <= witness.predict("workload", cpu, no_cache=True)["predictedCpu"] <= 1, label
                    # Housekeeping (gauges, heartbeat) must have read the word before the
                    # hostile caller's own publish could overwrite it.
                    _housekeeping_since(stats, written, witness, label, daemon)
                    depth, _corrupt = stats.arrays["gauges"][0]
                    assert 0 <= depth <= 1 << 24, f"{label}: queue gauge {depth}"
                    _snapshot.snapshot(stats)  # what `shmd status` and /api/ml/metrics read
                    try:  # the hostile caller gets an answer or a ShmdError, nothing else
                        hostile.predict("workload", SAMPLES["workload"], no_cache=True)
                        outcomes["answered"] += 1
                    except ShmdError:
                        outcomes["refused"] += 1
                    assert daemon.proc.poll() is None, f"{label}: daemon exited\n{daemon.log()}"
                _usable(prefix, witness, label, daemon)
    finally:
        witness.close()
        stats.close()
    assert sum(outcomes.values()) == len(REGIONS[region]) * len(VALUES)
    assert "Traceback" not in daemon.log(), daemon.log()
