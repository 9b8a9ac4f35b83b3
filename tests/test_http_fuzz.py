"""Property-based fuzzing of every endpoint's body: no 5xx, ever; 400 naming the field exactly when invalid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import validate
from shmd._codec import api_field, encode_payload, model_id

from ._http_daemon import MODELS, Daemon, unique_prefix, valid
from ._oracle import OUTPUT_FIELDS, codec_problems, mutated, payloads
from .test_http_app import Shim

POST_PATHS = (
    *(f"/api/ml/predict/{m}" for m in MODELS),
    *(f"/api/ml/predict/{m}/batch" for m in MODELS),
    "/api/ml/metrics/reset",
    "/api/ml/cache/clear",
)
GET_PATHS = ("/api/ml/metrics", "/api/ml/metrics/workload", "/api/ml/cache/stats", "/health", "/ready",
             "/metrics", "/openapi.json")  # fmt: skip
CONTENT_TYPES = ("application/json", "application/msgpack", "text/plain", "application/json; charset=latin-1", None)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=25) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=40,
)


def bodies() -> st.SearchStrategy[Any]:
    per_model = [mutated(m) for m in MODELS]
    return (
        values
        | st.one_of(per_model)
        | st.builds(lambda items: {"features": items}, st.lists(st.one_of(per_model), max_size=5))
        | st.builds(lambda m: {"model": m}, values)
    )


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("fz"))
    yield d
    assert not d.stop(), "daemon left shared memory behind"


@pytest.fixture(scope="module")
def shim(daemon: Daemon) -> Iterator[Shim]:
    s = Shim(daemon.prefix, admin_token=None)  # no token: reset and clear get fuzzed too
    yield s
    s.close()


def _encode(body: Any, ctype: str | None) -> bytes:
    if ctype == "application/msgpack":
        return msgpack.packb(body, use_bin_type=True)
    return json.dumps(body).encode()  # NaN and Infinity go out as the literals Python accepts


@FUZZ
@given(path=st.sampled_from(POST_PATHS), body=bodies(), ctype=st.sampled_from(CONTENT_TYPES))
def test_structured_bodies_never_5xx(shim: Shim, path: str, body: Any, ctype: str | None) -> None:
    try:
        data = _encode(body, ctype)
    except (OverflowError, ValueError, TypeError):
        data = repr(body).encode()  # msgpack cannot hold ints past 64 bits: send them as garbage instead
    headers = {"Content-Type": ctype} if ctype else {}
    status, _, raw = shim.call("POST", path, data=data, headers=headers)
    assert status < 500, raw
    if status >= 400:
        decoded = msgpack.unpackb(raw) if raw[:1] not in (b"{",) else json.loads(raw)
        assert decoded["success"] is False and decoded["error"]


@FUZZ
@given(
    path=st.sampled_from(POST_PATHS + GET_PATHS),
    data=st.binary(max_size=300),
    ctype=st.sampled_from(CONTENT_TYPES),
    accept=st.sampled_from(("application/json", "application/msgpack", "*/*", "")),
)
def test_raw_bytes_never_5xx(shim: Shim, path: str, data: bytes, ctype: str | None, accept: str) -> None:
    headers = {"Accept": accept, **({"Content-Type": ctype} if ctype else {})}
    method = "GET" if path in GET_PATHS else "POST"
    status, _, raw = shim.call(method, path, data=data, headers=headers)
    assert status < 500, raw


def test_daemon_still_answers_after_fuzzing(shim: Shim, daemon: Daemon) -> None:
    assert daemon.alive(), f"daemon exited rc={daemon.proc.returncode}:\n{daemon.log()[-3000:]}"
    for model in MODELS:
        status, body = shim.json("POST", f"/api/ml/predict/{model}", json=valid(model, 99_999))
        assert status == 200 and body["success"], body
    assert shim.json("GET", "/ready")[0] == 200


def expected_refusal(model: str, body: Any) -> list[str]:
    """API paths a 400 may name for this body ([]: it must be answered 200).

    The client codec's rules come from the independent ``codec_problems``; value
    ranges are the encoders' (their Python mirror, ``models.validate``).
    """
    problems = codec_problems(model, body)
    if problems:
        return problems
    mid = model_id(model)
    return [api_field(mid, field) for field, _ in validate(mid, encode_payload(mid, body))]


ORACLE = settings(FUZZ, max_examples=60)


@ORACLE
@given(model=st.sampled_from(MODELS), data=st.data())
def test_single_predict_is_200_when_valid_else_400_naming_the_field(shim: Shim, model: str,
                                                                    data: st.DataObject) -> None:  # fmt: skip
    body = data.draw(mutated(model) if data.draw(st.integers(0, 3)) else payloads(model))
    want = expected_refusal(model, body)
    status, _, raw = shim.call("POST", f"/api/ml/predict/{model}", data=_encode(body, "application/json"),
                               headers={"Content-Type": "application/json"})  # fmt: skip
    reply = json.loads(raw)
    if not want:
        assert status == 200 and reply["success"], reply
        assert set(OUTPUT_FIELDS[model]) <= set(reply["prediction"]), reply
    else:
        assert status == 400 and reply["success"] is False, (want, reply)
        assert any(p in reply["error"] for p in want), f"the error names none of {want}: {reply['error']}"


@ORACLE
@given(model=st.sampled_from(MODELS), data=st.data())
def test_batch_is_200_when_all_valid_else_400_naming_item_and_field(shim: Shim, model: str,
                                                                    data: st.DataObject) -> None:  # fmt: skip
    items = data.draw(st.lists(mutated(model) if data.draw(st.integers(0, 2)) == 0 else payloads(model),
                               min_size=1, max_size=4))  # fmt: skip
    # The codec refuses the first item it cannot encode before anything is sent; only then
    # does the daemon judge value ranges, item by item.
    verdicts = [codec_problems(model, it) for it in items]
    if not any(verdicts):
        verdicts = [expected_refusal(model, it) for it in items]
    status, _, raw = shim.call("POST", f"/api/ml/predict/{model}/batch",
                               data=_encode({"features": items}, "application/json"),
                               headers={"Content-Type": "application/json"})  # fmt: skip
    reply = json.loads(raw)
    bad = [i for i, v in enumerate(verdicts) if v]
    if not bad:
        assert status == 200 and reply["count"] == len(items), reply
    else:
        i = bad[0]
        assert status == 400 and reply["error"].startswith(f"features[{i}]"), (i, verdicts[i], reply)
        assert any(p in reply["error"] for p in verdicts[i]), f"item {i}: names none of {verdicts[i]}: {reply}"
