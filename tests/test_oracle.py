"""Every answer equals the model's own output for its payload, whoever asks and however it is batched.

One ``shmd serve`` with its HTTP shim and channels a, b, c. Each hypothesis
example is a batch of valid payloads of mixed models, sent at the same time
- as raw records, the models interleaved, to channel a (Python ``submit``/``reap``),
- through ``Client.predict_many`` (one call per model) on channel b,
- through the C client (``shmd_roundtrip rt PREFIX c batch``) on channel c,
- through HTTP ``POST /api/ml/predict/{model}/batch``,
and every answer is compared with ``_oracle.Reference`` (encode -> model ->
post-processing of that one payload, in this process) within 1e-6.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, Status
from shmd._codec import encode_payload, model_id
from shmd.client import Client, now_ns

from ._http_daemon import Daemon, free_port, unique_prefix
from ._oracle import MODELS, REL, Reference, api_fields, close, expected_outputs, mixed_items, payloads

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "kernel_abi" / "c"
ORACLE = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])  # fmt: skip
Items = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def roundtrip_tool() -> Path:
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"make -C kernel_abi/c failed:\n{proc.stdout}\n{proc.stderr}"
    return C_DIR / "build" / "shmd_roundtrip"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("or"), port=free_port(), channels="a,b,c")
    yield d
    assert not d.stop(), "daemon left shared memory behind"


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference()


@pytest.fixture(scope="module")
def clients(daemon: Daemon) -> Iterator[tuple[Client, Client]]:
    with Client("a", prefix=daemon.prefix, timeout=20) as a, Client("b", prefix=daemon.prefix, timeout=20) as b:
        yield a, b


def records(items: Items, no_cache: list[bool]) -> np.ndarray:
    """REQUEST records for mixed-model items, in order (ids and times left to the sender)."""
    out = np.zeros(len(items), REQUEST)
    for i, (model, fields) in enumerate(items):
        mid = model_id(model)
        rec = out[i : i + 1].view(REQUESTS[mid])
        rec["payload"] = encode_payload(mid, fields)
        rec["model_id"] = mid
        rec["abi_version"] = ABI_VERSION
        rec["payload_len"] = PAYLOADS[mid].itemsize
        rec["flags"] = REQ_NO_CACHE if no_cache[i] else 0
    return out


def raw_roundtrip(client: Client, recs: np.ndarray, timeout: float = 20.0) -> np.ndarray:
    """Submit raw records, reap until all are answered; the responses in submission order."""
    recs = recs.copy()
    recs["request_id"] = client.new_ids(len(recs))
    recs["submit_ns"] = now_ns()
    got: dict[int, np.ndarray] = {}
    sent = 0
    deadline = time.monotonic() + timeout
    while len(got) < len(recs):
        assert time.monotonic() < deadline, f"{len(got)} of {len(recs)} answered"
        if sent < len(recs):
            sent += client.submit(recs[sent:])
        client.wait(0.05)
        for r in client.reap():
            got[int(r["request_id"])] = r
    return np.array([got[int(i)] for i in recs["request_id"]])


def http_batches(port: int, items: Items) -> dict[str, list[dict[str, Any]]]:
    """One ``/batch`` call per model present; its predictions, in item order."""
    out = {}
    for model in MODELS:
        features = [f for m, f in items if m == model]
        if not features:
            continue
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/ml/predict/{model}/batch", data=json.dumps({"features": features}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = json.loads(resp.read())
        assert body["success"] and body["count"] == len(features), body
        out[model] = body["predictions"]
    return out


def by_model(items: Items) -> dict[str, list[int]]:
    return {m: [i for i, (mm, _) in enumerate(items) if mm == m] for m in MODELS}


def assert_prediction(model: str, got: dict[str, Any], want: dict[str, float], where: str) -> None:
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=REL, abs=REL), f"{where}: {model}.{name}: {got} vs {want}"


@ORACLE
@given(items=mixed_items(), data=st.data())
def test_every_path_answers_what_the_model_says(
    daemon: Daemon, clients: tuple[Client, Client], roundtrip_tool: Path, ref: Reference, items: Items,
    data: st.DataObject,
) -> None:  # fmt: skip
    a, b = clients
    no_cache = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    recs = records(items, no_cache)
    want = [ref.outputs(m, f) for m, f in items]

    others: dict[str, Any] = {}

    def c_client() -> None:
        others["c"] = subprocess.run([str(roundtrip_tool), "rt", daemon.prefix, "c", "batch"], input=recs.tobytes(),
                                     capture_output=True, timeout=30)  # fmt: skip

    def http_client() -> None:
        others["http"] = http_batches(daemon.port, items)

    threads = [threading.Thread(target=c_client), threading.Thread(target=http_client)]
    for t in threads:
        t.start()
    try:
        raw = raw_roundtrip(a, recs)
        high = {m: b.predict_many(m, [items[i][1] for i in idx], no_cache=True) for m, idx in by_model(items).items()
                if idx}  # fmt: skip
    finally:
        for t in threads:
            t.join(40)

    # Channel a: raw records, models interleaved in one submission.
    for i, (model, _) in enumerate(items):
        assert raw[i]["status"] == Status.OK, (i, model, raw[i])
        assert raw[i]["model_id"] == model_id(model)
        assert close(raw[i]["outputs"], want[i]), f"channel a item {i} ({model}): {raw[i]['outputs']} vs {want[i]}"
    # Channel c: the C client, the same records as one batch.
    c_tool = others["c"]
    assert c_tool.returncode == 0, c_tool.stderr.decode()
    lines = c_tool.stdout.decode().splitlines()
    assert len(lines) == len(items), c_tool.stdout
    for i, line in enumerate(lines):
        idx, status, _flags, source, *outs = line.split()
        assert (int(idx), int(status), source) == (i, Status.OK, "daemon"), line
        assert close([float(v) for v in outs], want[i]), f"C item {i} ({items[i][0]}): {outs} vs {want[i]}"
    # Channel b (predict_many) and HTTP: API field names, per model, in item order.
    http = others["http"]
    assert set(http) == {m for m, idx in by_model(items).items() if idx}, http
    for model, idx in by_model(items).items():
        for k, i in enumerate(idx):
            expected = api_fields(model, want[i])
            assert_prediction(model, high[model][k], expected, f"predict_many item {i}")
            assert_prediction(model, http[model][k], expected, f"HTTP item {i}")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), data=st.data())
def test_permuting_a_batch_permutes_its_answers(clients: tuple[Client, Client], model: str,
                                                data: st.DataObject) -> None:  # fmt: skip
    a, _ = clients
    batch = data.draw(st.lists(payloads(model), min_size=2, max_size=40))
    perm = data.draw(st.permutations(range(len(batch))))
    recs = records([(model, f) for f in batch], [True] * len(batch))
    first = raw_roundtrip(a, recs)["outputs"]
    again = raw_roundtrip(a, recs[list(perm)])["outputs"]
    np.testing.assert_allclose(again, first[list(perm)], rtol=REL, atol=REL)



raw_values = st.floats(-2.0, 2.0, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.5, 1e3, 1e9, -1e9])


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), data=st.data())
def test_postprocess_is_the_documented_mapping(model: str, data: st.DataObject) -> None:
    """The compiled post-processing equals docs/MODELS.md's table for any raw outputs, NaN and overflow included."""
    mid = model_id(model)
    n = data.draw(st.integers(1, 6))
    raw = np.array(data.draw(st.lists(st.lists(raw_values, min_size=models.N_RAW_OUTPUTS[mid],
                                               max_size=models.N_RAW_OUTPUTS[mid]), min_size=n, max_size=n)),
                   np.float32)  # fmt: skip
    out = np.full((n, 4), -7.0)
    models.postprocess(int(mid), raw, out)
    for i in range(n):
        assert close(out[i], expected_outputs(model, raw[i])), (model, raw[i], out[i])
