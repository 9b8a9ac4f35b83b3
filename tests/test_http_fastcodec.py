"""The shim's fast paths (msgspec into records, struct-packed single requests, a batch's answers
column by column) agree with the general codec.

For generated batch bodies (valid items, and items with one field replaced by an arbitrary
JSON value), ``decode_batch`` either declines (None) or builds exactly the records that
``shmd._codec.encode_payloads`` builds from the parsed body; and it never accepts a body
the general codec refuses. For generated RESPONSE records (any status, outputs from the
edges of float32, enum values in and out of range, cache flags), ``predictions`` either
declines or gives exactly ``shmd._records.prediction`` of each record, and declines
whenever a record is refused or ``prediction`` would raise.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_abi import REQUESTS, RESP_CACHE_HIT, RESPONSE, ModelId, Status
from shmd import InvalidFields, ShmdError
from shmd._codec import encode_payloads
from shmd._fastcodec import decode_batch, decode_item
from shmd._records import columns, prediction
from shmd._wire import PAYLOAD

from ._http_daemon import valid

FAST_MODELS = ("workload", "failure", "memory")

_EDGES = (3.4028234663852886e38, 3.5e38, -3.5e38, 1e300, 2**64 - 1, 2**64, -1, 0, 5.0, 24, 129 * "x", "", "\ud800")
_json_scalar = st.one_of(
    st.sampled_from(_EDGES), st.none(), st.booleans(), st.text(max_size=3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
_json_value = st.one_of(_json_scalar, st.lists(_json_scalar, max_size=21))


@st.composite
def _numbers(draw: st.DrawFn, n: int, lo: float, hi: float) -> list[float]:
    return draw(st.lists(st.floats(lo, hi, allow_nan=False, width=64), min_size=n, max_size=n))


@st.composite
def bodies(draw: st.DrawFn, model: str) -> bytes:
    items = []
    for i in range(draw(st.integers(1, 4))):
        item = valid(model, i)
        for key in draw(st.lists(st.sampled_from(sorted(item)), max_size=2, unique=True)):
            choice = draw(st.integers(0, 2))
            if choice == 0:
                item[key] = draw(_json_value)  # an arbitrary value: usually invalid
            elif choice == 1:
                del item[key]
            elif isinstance(item[key], list) and all(isinstance(v, float) for v in item[key]):
                item[key] = draw(_numbers(len(item[key]), -1e6, 1e6))  # distinct valid-typed numbers
        items.append(item)
    return json.dumps({"features": items}).encode()


@pytest.mark.parametrize("model", FAST_MODELS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_builds_the_same_records_or_declines(model: str, data: st.DataObject) -> None:
    body = data.draw(bodies(model))
    mid = ModelId[model.upper()]
    fast = decode_batch(mid, body)
    try:
        general = encode_payloads(mid, json.loads(body)["features"])
    except (InvalidFields, TypeError, ValueError, OverflowError):
        general = None
    if fast is None:
        return
    assert general is not None, f"fast path accepted what the codec refuses: {body!r}"
    assert fast.dtype == general.dtype
    for name in fast.dtype.names:  # the named fields; np.array leaves the general path's padding unset
        assert fast[name].tobytes() == general[name].tobytes(), (name, body)


@pytest.mark.parametrize("model", FAST_MODELS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_single_item_fast_path_packs_the_same_record_or_declines(model: str, data: st.DataObject) -> None:
    item = json.loads(data.draw(bodies(model)))["features"][0]
    mid = ModelId[model.upper()]
    values = decode_item(mid, json.dumps(item).encode())
    try:
        general = encode_payloads(mid, [item])
    except (InvalidFields, TypeError, ValueError, OverflowError):
        general = None
    if values is None:
        return
    assert general is not None, f"fast path accepted what the codec refuses: {item!r}"
    try:
        packed = PAYLOAD[mid].request(values)
    except struct.error:  # past u64: the shim falls back to the codec too
        return
    (record,) = np.frombuffer(packed, REQUESTS[mid])
    for name in general.dtype.names:
        assert record["payload"][name].tobytes() == general[0][name].tobytes(), (name, item)


@pytest.mark.parametrize("model", FAST_MODELS)
def test_fast_path_takes_valid_batches(model: str) -> None:
    body = json.dumps({"features": [valid(model, i) for i in range(50)]}).encode()
    fast = decode_batch(ModelId[model.upper()], body)
    assert fast is not None and len(fast) == 50
    assert np.array_equal(fast, encode_payloads(ModelId[model.upper()], json.loads(body)["features"]))


def test_fast_path_declines_threat_and_empty_batches() -> None:
    assert decode_batch(ModelId.THREAT, json.dumps({"features": [valid("threat")]}).encode()) is None
    assert decode_batch(ModelId.WORKLOAD, b'{"features": []}') is None


_OUTPUT = st.one_of(
    st.sampled_from((0.0, -0.5, 0.99, 1.0, 2.7, 3.0, 4.0, 9.0, -1.0, 2.0**63, 9.3e18, 3.4e38, -3.4e38, np.nan, np.inf)),
    st.floats(-1e3, 1e3, width=32),
    st.floats(width=32),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(list(ModelId)), rows=st.lists(
    st.tuples(st.lists(_OUTPUT, min_size=4, max_size=4), st.booleans(),
              st.sampled_from((Status.OK,) * 6 + (Status.INVALID_INPUT,))),
    min_size=1, max_size=6))  # fmt: skip
def test_batch_answers_are_the_per_record_predictions(model: ModelId, rows: list) -> None:
    resp = np.zeros(len(rows), RESPONSE)
    for i, (outputs, hit, status) in enumerate(rows):
        resp[i]["outputs"] = outputs
        resp[i]["flags"] = RESP_CACHE_HIT if hit else 0
        resp[i]["status"] = status
    expected: list | None = []
    for r in resp:
        try:
            assert int(r["status"]) == Status.OK
            expected.append(prediction(model, r["outputs"], int(r["flags"]), int(r["model_version"])))
        except (AssertionError, ShmdError):
            expected = None
            break
    got = columns(model, resp)
    assert got == expected
    if got is not None:
        assert [list(map(type, d.values())) for d in got] == [list(map(type, d.values())) for d in expected]
        assert [list(d) for d in got] == [list(d) for d in expected]  # the same keys in the same order
