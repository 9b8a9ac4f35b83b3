"""A hostile daemon: scribbled CQ words and garbage response slots never crash a caller.

The "daemon" here is a thread of the test that creates a real channel,
consumes the real SQ and answers through the real CQ, but lies: it
writes garbage into the CQ header words it owns or into the response slots.
Against it run the Python client, the C client (ASan/UBSan build) and the HTTP
shim (the real aiohttp application). Each must answer with a result, an error
that says what happened (a ShmdError; an HTTP error envelope; the C fallback),
never crash, and keep nothing for the requests it gave up on.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

import ringbuf
from kernel_abi import RESPONSE, ModelId, Status
from shmd import ShmdError
from shmd._stats_segment import StatsSegment
from shmd.client import Client
from shmd.samples import SAMPLES

from ._http_daemon import valid
from .test_native import BUILDS, C_DIR, SAN_ENV, Watch

pytestmark = pytest.mark.timeout(120)

CHANNEL = "x"
_rng = np.random.default_rng(7)


Lie = Callable[[np.ndarray, np.ndarray], None]  # (requests, responses to fill)


def _answer_ok(reqs: np.ndarray, out: np.ndarray) -> None:
    out["request_id"] = reqs["request_id"]
    out["model_id"] = reqs["model_id"]
    out["outputs"] = (0.5, 0.0, 0.5, 0.5)


def _random_bytes(out: np.ndarray) -> None:
    out.view(np.uint8)[:] = _rng.integers(0, 256, out.nbytes, dtype=np.uint8)


def _random_right_id(reqs: np.ndarray, out: np.ndarray) -> None:
    _random_bytes(out)
    out["request_id"] = reqs["request_id"]


def _outputs(values: tuple[float, ...]) -> Lie:
    def answer(reqs: np.ndarray, out: np.ndarray) -> None:
        _answer_ok(reqs, out)
        out["outputs"] = values

    return answer


def _fields(**values: int) -> Lie:
    def answer(reqs: np.ndarray, out: np.ndarray) -> None:
        _answer_ok(reqs, out)
        for k, v in values.items():
            out[k] = v

    return answer


# Response-slot lies: how the hostile daemon fills the answers.
SLOTS: dict[str, Lie] = {
    "random_bytes_right_id": _random_right_id,
    "random_bytes_wrong_id": lambda reqs, out: _random_bytes(out),
    "nan_outputs": _outputs((np.nan,) * 4),
    "inf_outputs": _outputs((np.inf, -np.inf, np.inf, -np.inf)),
    "huge_outputs": _outputs((1e300, -1e300, 1e300, 1e300)),
    "unknown_status": _fields(status=999),
    "invalid_input_field_999": _fields(status=int(Status.INVALID_INPUT), error_field=999, model_id=999),
    "other_model": _fields(model_id=int(ModelId.THREAT)),
}

# CQ header lies: which word of the CQ header it overwrites after publishing, and how.
CQ_WORDS: dict[str, tuple[str, Callable[[int], int]]] = {
    "tail_back_3": ("tail", lambda cur: (cur - 3) % 2**64),
    "tail_far_ahead": ("tail", lambda cur: cur + 1_000_003),
    "tail_all_ones": ("tail", lambda cur: 2**64 - 1),
    "tail_2^63": ("tail", lambda cur: 2**63),
    "magic_zero": ("magic", lambda cur: 0),
    "abi_version_bumped": ("abi_version", lambda cur: cur + 1),
}


class HostileDaemon:
    """Serves channel ``x`` of ``prefix`` from a thread, answering per ``scenario``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channel = ringbuf.Channel.create(prefix, CHANNEL, sq_capacity=16, cq_capacity=16)
        self.channel.header["daemon_pid"] = os.getpid()
        self.stats = StatsSegment.create(prefix, {}, {"pid": os.getpid(), "prefix": prefix, "channels": [CHANNEL]})
        self.scenario = "nan_outputs"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def reset(self, scenario: str) -> None:
        """A fresh channel (the previous scenario may have broken it) served per ``scenario``."""
        self.pause()
        self.channel.unlink()
        self.channel.close()
        self.channel = ringbuf.Channel.create(self.prefix, CHANNEL, sq_capacity=16, cq_capacity=16)
        self.channel.header["daemon_pid"] = os.getpid()
        self.scenario = scenario
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sq = ringbuf.Consumer(self.channel.sq)
        cq = ringbuf.Producer(self.channel.cq)  # wakes a sleeping client itself (the ring's futex word)
        hdr = self.channel.cq.header
        while not self._stop.is_set():
            self.channel.header["daemon_heartbeat_ns"] = time.monotonic_ns()
            reqs = sq.consume(16)
            if not len(reqs):
                time.sleep(0.0005)
                continue
            out = np.zeros(len(reqs), RESPONSE)
            SLOTS.get(self.scenario, _answer_ok)(reqs, out)
            try:
                cq.produce(out)
            except ringbuf.RingCorrupt:
                pass  # the client answered our lies with a head of its own: nothing more to say
            if self.scenario in CQ_WORDS:
                word, value = CQ_WORDS[self.scenario]
                hdr[word] = value(int(hdr[word]))

    def pause(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def close(self) -> None:
        self.pause()
        self.channel.unlink()
        self.channel.close()
        self.stats.unlink()
        self.stats.close()


@pytest.fixture(scope="module")
def asan_tools() -> Path:
    """The C client's test tools built with ASan/UBSan (as tests/test_native.py builds them)."""
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR), "asan"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"make asan failed:\n{proc.stdout}\n{proc.stderr}"
    return BUILDS["asan"]


@pytest.fixture
def hostile(prefix: str) -> Iterator[HostileDaemon]:
    d = HostileDaemon(prefix)
    yield d
    d.close()


SCENARIOS = list(SLOTS) + list(CQ_WORDS)


def _numbers(prediction: dict) -> list[float]:
    return [v for v in prediction.values() if isinstance(v, int | float)]


def test_python_client_survives_every_lie(hostile: HostileDaemon) -> None:
    outcomes: dict[str, str] = {}
    for scenario in SCENARIOS:
        hostile.reset(scenario)
        with Client(CHANNEL, prefix=hostile.prefix, timeout=0.3) as c:
            for _ in range(3):  # a lie, then again on the same (maybe broken) channel
                try:
                    prediction = c.predict("workload", SAMPLES["workload"])
                    outcomes[scenario] = "answered"
                    assert all(math.isfinite(v) and abs(v) < 2**63 for v in _numbers(prediction)), prediction
                except ShmdError as err:
                    outcomes[scenario] = type(err).__name__
                    assert str(err), scenario
            assert c.outstanding == 0 and not c._results, f"{scenario}: the client kept given-up requests"
    assert outcomes == {
        "random_bytes_right_id": outcomes["random_bytes_right_id"],  # any status: an answer or its error
        "random_bytes_wrong_id": "NotReady",
        "nan_outputs": "InternalError",
        "inf_outputs": "InternalError",
        "huge_outputs": outcomes["huge_outputs"],
        "unknown_status": "InternalError",
        "invalid_input_field_999": "InternalError",
        "other_model": "answered",
        **{s: "ChannelCorrupt" for s in CQ_WORDS if s.startswith("tail")},
        "magic_zero": "ChannelCorrupt",
        "abi_version_bumped": "ChannelCorrupt",
    }, outcomes


def test_c_client_survives_every_lie_under_sanitizers(hostile: HostileDaemon, asan_tools: Path) -> None:
    """The ASan/UBSan build keeps calling through every lie; no sanitizer report, exit 0."""
    for scenario in SCENARIOS:
        hostile.reset(scenario)
        watch = Watch(asan_tools / "shmd_roundtrip", hostile.prefix, 0.4, env=SAN_ENV)
        try:
            watch.proc.wait(30)
            stats = watch.finish()  # exit 0 and an empty stderr (sanitizers report there)
        finally:
            watch.kill()
        assert stats.startswith("stats calls="), f"{scenario}: {stats}"


def test_http_shim_answers_every_lie_with_an_error_envelope(hostile: HostileDaemon) -> None:
    from http_shim import create_app

    async def run() -> dict[str, tuple[int, str]]:
        seen: dict[str, tuple[int, str]] = {}
        for scenario in SCENARIOS:
            hostile.reset(scenario)
            app = create_app(hostile.prefix, CHANNEL, timeout=0.3)
            async with TestClient(TestServer(app, host="127.0.0.1")) as http:
                for _ in range(2):
                    async with http.post("/api/ml/predict/workload", json=valid("workload")) as resp:
                        body = json.loads(await resp.read())
                        assert body["success"] is (resp.status == 200), (scenario, body)
                        assert resp.status == 200 or body["error"], (scenario, body)
                        seen[scenario] = (resp.status, body.get("error", ""))
        return seen

    seen = asyncio.run(asyncio.wait_for(run(), 90))
    for scenario in ("nan_outputs", "inf_outputs", "unknown_status"):
        assert seen[scenario][0] == 500 and "INTERNAL" in seen[scenario][1], seen
    assert seen["random_bytes_wrong_id"][0] == 503, seen
    for scenario in CQ_WORDS:  # the channel is unusable, and the message says why
        status, error = seen[scenario]
        assert status == 503 and error.startswith("daemon channel unavailable: "), seen
        assert "corrupt" in error or "overwritten" in error, seen
    bad = {s: v for s, v in seen.items() if v[0] == 400 and "body" in v[1]}
    assert not bad, f"the daemon's lies were blamed on the caller's body: {bad}"
