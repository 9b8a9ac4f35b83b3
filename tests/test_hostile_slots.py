"""Slot fuzz: arbitrary request slots are answered with a status naming the field, never a model crash.

Hypothesis builds request records for every model: any model id, ABI version,
payload length and flags, and payloads that are valid samples with hostile values
(NaN, +-inf, denormals, huge, negative) in any fields, or raw random bytes. A live
daemon must answer each record exactly once with the status the rules give, naming
the first invalid field; and no non-finite feature ever reaches a model (the
compiled encoders either reject a payload or produce finite features).
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId, Status
from models import encode_batch, validate
from shmd._codec import encode_payload
from shmd.client import Client, now_ns
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),  # hostile values, on purpose
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

MODELS = list(ModelId)
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, 1e-45, 5e-324, 3.4e38, -3.4e38, 1e300, -1.0, -1e9, 0.0, 2.0]


def _hostile_payload(draw: st.DrawFn, mid: ModelId) -> bytes:
    """A valid sample with hostile values in some fields, or raw random bytes."""
    size = PAYLOADS[mid].itemsize
    if draw(st.booleans()):
        return draw(st.binary(min_size=size, max_size=size))
    rec = encode_payload(mid, SAMPLES[mid.name.lower()]).reshape(1)
    for name in PAYLOADS[mid].names:
        if draw(st.integers(0, 3)) != 0:  # about one field in four
            continue
        kind = rec.dtype[name].base.kind
        info = np.iinfo(rec.dtype[name].base) if kind in "iu" else None
        value = draw(st.sampled_from(HOSTILE_FLOATS)) if kind == "f" else draw(st.integers(info.min, info.max))
        if rec.dtype[name].shape:
            rec[name][0][draw(st.integers(0, rec.dtype[name].shape[0] - 1))] = value
        else:
            rec[name] = value
    return rec.tobytes()


@st.composite
def hostile_records(draw: st.DrawFn, mid: ModelId) -> np.ndarray:
    n = draw(st.integers(1, 8))
    recs = np.zeros(n, REQUESTS[mid])
    raw = recs.view(REQUEST)
    for i in range(n):
        payload = _hostile_payload(draw, mid)
        raw["payload"][i][: len(payload)] = np.frombuffer(payload, np.uint8)
        recs["model_id"][i] = draw(st.one_of(st.just(int(mid)), st.integers(0, 65535)))
        recs["abi_version"][i] = draw(st.one_of(st.just(ABI_VERSION), st.integers(0, 65535)))
        size = PAYLOADS[mid].itemsize
        recs["payload_len"][i] = draw(st.one_of(st.just(size), st.integers(0, 2**32 - 1)))
        recs["flags"][i] = draw(st.integers(0, 2**32 - 1))
    return recs


def _expected(rec: np.void) -> tuple[int, int]:
    """(status, error_field) the daemon's rules give for one record."""
    if rec["abi_version"] != ABI_VERSION:
        return Status.BAD_VERSION, 0
    try:
        mid = ModelId(int(rec["model_id"]))
    except ValueError:
        return Status.UNKNOWN_MODEL, 0
    if rec["payload_len"] != PAYLOADS[mid].itemsize:
        return Status.INVALID_INPUT, 0
    payload = np.array([rec]).view(REQUESTS[mid])[0]["payload"]
    problems = validate(mid, payload)
    if problems:
        return Status.INVALID_INPUT, PAYLOADS[mid].names.index(problems[0][0]) + 1
    return Status.OK, 0


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    prefix = f"sf{os.getpid()}x{secrets.token_hex(3)}"
    try:
        with DaemonProcess(prefix, "--channels", "fuzz") as proc:
            yield proc
        assert proc.proc.returncode == 0, proc.log()
    finally:
        left = ringbuf.remove_leftovers(prefix)
    assert not left, f"daemon left {left}"


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with Client("fuzz", prefix=daemon.prefix) as c:
        yield c


def _roundtrip(client: Client, recs: np.ndarray) -> dict[int, list[np.void]]:
    recs["request_id"] = client.new_ids(len(recs))
    recs["submit_ns"] = now_ns()
    recs["deadline_ns"] = 0
    assert client.submit(recs.view(REQUEST)) == len(recs)
    got: dict[int, list[np.void]] = {}
    deadline = time.monotonic() + 10
    while sum(map(len, got.values())) < len(recs) and time.monotonic() < deadline:
        client.wait(0.05)
        for r in client.reap():
            got.setdefault(int(r["request_id"]), []).append(r)
    return got


@pytest.mark.parametrize("mid", MODELS, ids=[m.name.lower() for m in MODELS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_slots_get_the_status_naming_the_field(
    daemon: DaemonProcess, client: Client, mid: ModelId, data: st.DataObject
) -> None:
    recs = data.draw(hostile_records(mid))
    got = _roundtrip(client, recs)
    assert daemon.proc.poll() is None, daemon.log()
    for rec in recs:
        answers = got.get(int(rec["request_id"]), [])
        assert len(answers) == 1, f"answered {len(answers)} times: {rec}"
        resp = answers[0]
        status, field = _expected(rec)
        assert (int(resp["status"]), int(resp["error_field"])) == (status, field), rec
        if status == Status.OK:
            assert np.isfinite(resp["outputs"]).all(), resp


@pytest.mark.parametrize("mid", MODELS, ids=[m.name.lower() for m in MODELS])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_non_finite_feature_reaches_a_model(mid: ModelId, data: st.DataObject) -> None:
    """The compiled encoder rejects a payload (naming its first bad field) or yields finite features."""
    payload = np.frombuffer(_hostile_payload(data.draw, mid), PAYLOADS[mid])
    features, err = encode_batch(mid, payload)
    problems = validate(mid, payload[0])
    if err[0] == 0:
        assert problems == [] and np.isfinite(features).all(), (problems, features)
    else:
        assert PAYLOADS[mid].names[err[0] - 1] == problems[0][0]
