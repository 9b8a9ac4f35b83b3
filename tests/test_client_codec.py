"""The Python client's fast paths (msgspec + struct in, column by column out) agree with the general codec.

No daemon: records are compared field by field with what ``shmd._codec`` builds, errors by
type, field, item and message, and answers with the per-record ``read_response``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_abi import REQUEST, REQUESTS, RESP_CACHE_HIT, RESPONSE, ModelId, Status
from shmd import DaemonError, InvalidFields
from shmd._codec import encode_payload, encode_payloads, model_id
from shmd._records import build_requests, pack_request, predictions, read_answer, read_response, requests_for
from shmd.samples import SAMPLES

from ._oracle import mutated, payloads


def _general_or_error(mid: ModelId, items: list) -> np.ndarray | InvalidFields:
    try:
        return requests_for(mid, encode_payloads(mid, items), submit_ns=0)
    except InvalidFields as err:
        return err


def _same_records(got: np.ndarray, want: np.ndarray) -> bool:
    """Field by field: the padding bytes of records numpy builds from tuples are not initialised."""
    return got.dtype == want.dtype and got.shape == want.shape and bool((got == want).all())


def _same_error(got: BaseException, want: InvalidFields) -> None:
    assert type(got) is type(want) and (got.field, got.item, str(got)) == (want.field, want.item, str(want))


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(list(SAMPLES)), st.data())
def test_one_item_packs_the_general_codecs_record_or_its_error(model: str, data: st.DataObject) -> None:
    mid, body = model_id(model), data.draw(mutated(model))
    want = _general_or_error(mid, [body])
    buf = bytearray(REQUEST.itemsize)
    try:
        pack_request(mid, body, buf)
    except InvalidFields as err:
        assert isinstance(want, InvalidFields), f"refused a body the general codec accepts: {err}"
        _same_error(err, want)
    else:
        assert not isinstance(want, InvalidFields), f"accepted a body the general codec refuses: {want}"
        assert _same_records(np.frombuffer(bytes(buf), want.dtype), want), "not the general codec's record"


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(list(SAMPLES)), st.data())
def test_a_batch_builds_the_general_codecs_records_or_names_the_item(model: str, data: st.DataObject) -> None:
    mid = model_id(model)
    items = data.draw(st.lists(payloads(model), min_size=1, max_size=6))
    if data.draw(st.booleans()):  # one item broken somewhere in the batch
        items[data.draw(st.integers(0, len(items) - 1))] = data.draw(mutated(model))
    want = _general_or_error(mid, items)
    try:
        got = build_requests(mid, items, submit_ns=0)
    except InvalidFields as err:
        assert isinstance(want, InvalidFields), f"refused a batch the general codec accepts: {err}"
        _same_error(err, want)
    else:
        assert not isinstance(want, InvalidFields), f"accepted a batch the general codec refuses: {want}"
        assert _same_records(got, want), "not the general codec's records"


def test_header_words_of_a_packed_record() -> None:
    buf = bytearray(REQUEST.itemsize)
    pack_request(ModelId.MEMORY, SAMPLES["memory"], buf, flags=1, deadline_ns=12345)
    rec = np.frombuffer(bytes(buf), REQUESTS[ModelId.MEMORY])[0]
    header = (int(rec["model_id"]), int(rec["flags"]), int(rec["deadline_ns"]), int(rec["request_id"]))
    assert header == (ModelId.MEMORY, 1, 12345, 0)
    assert _same_records(rec["payload"][None], encode_payload(ModelId.MEMORY, SAMPLES["memory"])[None])


_OUTPUT = st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.9, 5.0, 6.0, -0.5, -1.0, 1e12, 1e19, np.nan, np.inf, -np.inf])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(SAMPLES)), st.data())
def test_a_batch_of_answers_reads_as_each_answer_alone(model: str, data: st.DataObject) -> None:
    """Column by column, every record's own answer (not its neighbour's), and the same errors."""
    mid, n = model_id(model), data.draw(st.integers(1, 8))
    resp = np.zeros(n, RESPONSE)
    resp["model_id"] = mid
    resp["outputs"] = data.draw(st.lists(st.lists(st.floats(0, 1) | _OUTPUT, min_size=4, max_size=4),
                                         min_size=n, max_size=n))  # fmt: skip
    resp["flags"] = data.draw(st.lists(st.sampled_from([0, RESP_CACHE_HIT]), min_size=n, max_size=n))
    if data.draw(st.booleans()):
        resp["status"][data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from(list(Status)[2:]))
    items = [SAMPLES[model]] * n
    want: list = []
    for r in resp:
        try:
            want.append(read_response(mid, r, SAMPLES[model]))
        except DaemonError as err:
            want.append(err)
    got = predictions(mid, resp, items, return_exceptions=True)
    assert [g if isinstance(g, dict) else (type(g), str(g)) for g in got] == [
        w if isinstance(w, dict) else (type(w), str(w)) for w in want
    ]
    for r, w in zip(resp, want, strict=True):  # one record at a time, from bytes (Client.predict's way)
        try:
            one = read_answer(mid, r.tobytes(), SAMPLES[model])
        except DaemonError as err:
            one = err
        assert one == w if isinstance(w, dict) else (type(one), str(one)) == (type(w), str(w))
    failed = [i for i, w in enumerate(want) if not isinstance(w, dict)]
    if failed:
        with pytest.raises(DaemonError) as raised:
            predictions(mid, resp, items)
        assert raised.value.item == (failed[0] if n > 1 else None)
