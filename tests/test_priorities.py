"""Channel priorities: who a pass serves first, who is shed first, and that nobody starves.

``_share_room`` is checked on its own (exact allocations), then a real daemon with two
channels (``hi`` priority 3, ``lo`` priority 0) is frozen while both fill their SQs, so
its first pass after SIGCONT sees both: the passes that follow are then deterministic
and show in the per-model batch counters.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, ModelId, Status
from shmd import _loop
from shmd import _metrics as met
from shmd._codec import encode_payload
from shmd._config import MAX_PRIORITY
from shmd._pass import new_batch
from shmd._pass_layout import CHAN_BUSY_NS, CHAN_PRIORITY, CHAN_QUEUE_SHIFT
from shmd._stats_segment import StatsSegment
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

ROOM = 16  # --max-batch: levels below the top one share ROOM // LOWER_SHARE = 2 records a pass
NOW = 10**12


def _share(ready: list[int], prio: list[int], room: int = 512, busy_ns: list[int] | None = None) -> list[int]:
    batch = new_batch(room, len(ready), priorities=prio)
    if busy_ns is not None:
        batch.channels[:, CHAN_BUSY_NS] = busy_ns
    _loop._share_room(np.array(ready, np.int64), batch.alloc, batch.channels, 0, room, NOW)
    return batch.alloc.tolist()


def test_higher_priorities_take_the_room_and_the_lowest_keeps_a_bounded_share() -> None:
    assert _loop.MAX_LEVEL == MAX_PRIORITY
    share = 512 // _loop.LOWER_SHARE
    # Two floods: the high one gets all but the lower levels' share.
    assert _share([1000, 1000], [3, 0]) == [512 - share, share]
    # A light high channel gets what it asks; the flood below it is held to its share (short passes).
    assert _share([1, 1000], [3, 0]) == [1, share]
    # Three levels, all flooding: the top takes the most, the middle the lower share but one, the lowest one.
    assert _share([1000, 1000, 1000], [0, 1, 3]) == [1, share - 1, 512 - share]
    # Equal priorities: water-filled alike, as before priorities.
    assert _share([3, 1000, 1000], [1, 1, 1]) == [3, 255, 254]
    # A high channel idle for longer than the busy window no longer holds the others back.
    assert _share([0, 1000], [3, 0], busy_ns=[NOW - _loop.BUSY_WINDOW_NS, 0]) == [0, 512]
    # ... but within it (a paced caller between two requests) it does.
    assert _share([0, 1000], [3, 0], busy_ns=[NOW - _loop.BUSY_WINDOW_NS // 2, 0]) == [0, share]
    # More channels with work than room: one record each, higher levels no longer preferred.
    assert sum(_share([5] * 4, [0, 1, 2, 3], room=2)) == 2


def test_shedding_levels_double_per_priority_level() -> None:
    batch = new_batch(8, 4, priorities=[3, 0, 3, 7])
    assert batch.channels[:, CHAN_PRIORITY].tolist() == [3, 0, 3, 7]
    assert batch.channels[:, CHAN_QUEUE_SHIFT].tolist() == [1, 0, 1, 2]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    prefix = f"p{os.getpid()}x{os.urandom(3).hex()}"
    args = ("--channels", "hi,lo", "--priorities", "hi=3,lo=0", "--max-queue-ms", "200")
    with DaemonProcess(prefix, *args, env={"SHMD_MAX_BATCH": str(ROOM)}) as proc:
        yield proc
    assert proc.proc.returncode == 0, proc.log()
    left = ringbuf.remove_leftovers(prefix)
    assert not left, f"daemon left {left}"


def _records(model: ModelId, n: int, client: Client, *, no_cache: bool = True) -> np.ndarray:
    recs = np.zeros(n, REQUESTS[model])
    name = model.name.lower()
    recs["payload"] = encode_payload(model, SAMPLES[name])
    recs["request_id"] = client.new_ids(n)
    recs["model_id"] = model
    recs["abi_version"] = ABI_VERSION
    recs["payload_len"] = PAYLOADS[model].itemsize
    recs["flags"] = REQ_NO_CACHE if no_cache else 0
    recs["submit_ns"] = now_ns()
    return recs


def _collect(client: Client, n: int, timeout: float = 20.0) -> np.ndarray:
    got: list[np.ndarray] = []
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < n:
        assert time.monotonic() < deadline, f"only {sum(map(len, got))} of {n} answered"
        client.wait(0.05)
        got.append(client.reap())
    return np.concatenate(got)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, states: str) -> None:
    deadline = time.monotonic() + 10
    while _state(pid) not in states:
        assert time.monotonic() < deadline, f"daemon never reached state {states}: {_state(pid)}"
        time.sleep(0.005)


def test_frozen_backlog_drains_high_first_and_low_every_pass(daemon: DaemonProcess) -> None:
    n = 64
    seg = StatsSegment.attach(daemon.prefix)
    model = seg.arrays["model"]
    with Client("hi", daemon.prefix) as hi, Client("lo", daemon.prefix) as lo:
        hi_recs, lo_recs = _records(ModelId.THREAT, n, hi), _records(ModelId.WORKLOAD, n, lo)
        time.sleep(0.2)  # the busy window of any earlier work has passed; the loop sleeps
        _wait_state(daemon.pid, "S")
        batches0 = model[ModelId.THREAT, met.BATCHES], model[ModelId.WORKLOAD, met.BATCHES]
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            _wait_state(daemon.pid, "tT")
            hi_recs["submit_ns"] = lo_recs["submit_ns"] = now_ns()  # not shed (max_queue_ms 200)
            assert hi.submit(hi_recs.view(REQUEST)) == n and lo.submit(lo_recs.view(REQUEST)) == n
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        hi_out, lo_out = _collect(hi, n), _collect(lo, n)
    assert (hi_out["status"] == Status.OK).all() and (lo_out["status"] == Status.OK).all()
    hi_batches = int(model[ModelId.THREAT, met.BATCHES] - batches0[0])
    lo_batches = int(model[ModelId.WORKLOAD, met.BATCHES] - batches0[1])
    seg.close()
    # Each pass: hi takes all but the lower level's share (2 of 16); lo its share.
    # Equal priorities would take 8 + 8 (8 hi passes); a starved lo would let hi take 16 (4 passes).
    assert hi_batches == math.ceil(n / (ROOM - ROOM // _loop.LOWER_SHARE)), (hi_batches, lo_batches)
    # lo progressed in every pass hi had (2 a pass), then took the rest.
    assert lo_batches >= hi_batches + 1, (hi_batches, lo_batches)


def test_overload_sheds_the_lowest_priority_first(daemon: DaemonProcess) -> None:
    # max_queue_ms 200 is lo's limit; hi, one level up, tolerates twice as long.
    with Client("hi", daemon.prefix) as hi, Client("lo", daemon.prefix) as lo:
        old = now_ns() - 300_000_000
        hi_recs, lo_recs = _records(ModelId.FAILURE, 4, hi), _records(ModelId.FAILURE, 4, lo)
        hi_recs["submit_ns"] = lo_recs["submit_ns"] = old
        hi_recs["submit_ns"][3] = now_ns() - 500_000_000  # past hi's limit too
        assert hi.submit(hi_recs.view(REQUEST)) == 4 and lo.submit(lo_recs.view(REQUEST)) == 4
        hi_out, lo_out = _collect(hi, 4), _collect(lo, 4)
    assert (lo_out["status"] == Status.OVERLOADED).all()
    by_id = dict(zip(hi_out["request_id"].tolist(), hi_out["status"].tolist(), strict=True))
    assert [by_id[int(i)] for i in hi_recs["request_id"]] == [Status.OK] * 3 + [Status.OVERLOADED]
