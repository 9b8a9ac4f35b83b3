"""A batch's records written by the compiled walk over msgspec's MessagePack (``shmd._packbatch``) are
byte for byte those of the per-item ``struct`` packer, and the walk refuses an encoding it does not expect.

No daemon. ``test_client_codec`` compares ``build_requests`` (which uses the walk) with the general
codec on batches of up to 6; here batches go past 15 items (a MessagePack array's 16-bit length)
and ids past 31 bytes (str8, str16), and whole records are compared, padding included.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_abi import REQUESTS, ModelId
from shmd import _fastcodec, _packbatch, _wire
from shmd._codec import model_id
from shmd.samples import SAMPLES

from ._oracle import payloads

_MODELS = [m for m in SAMPLES if model_id(m) in _fastcodec._FIELDS]


def _both(mid: ModelId, items: list, flags: int = 0, deadline_ns: int = 0) -> tuple[bytes, bytes, bool]:
    """(the walk's records, the struct packer's records, whether the walk wrote them itself)."""
    checked = _fastcodec.check_items(mid, items)
    assert checked is not None
    walked, packed = np.zeros(len(items), REQUESTS[mid]), np.zeros(len(items), REQUESTS[mid])
    header = _wire.PAYLOAD[mid].header_bytes(flags, deadline_ns)
    plan = _fastcodec.batch_plan(mid)
    assert plan is not None, f"{mid.name} has no plan: its layout or defaults changed"
    own = _packbatch.pack_batch(plan, checked, walked, header)
    assert _fastcodec.pack_checked(mid, checked, packed, 0, len(items), flags, deadline_ns)
    return walked.tobytes(), packed.tobytes(), own


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_MODELS), st.data())
def test_the_walk_writes_the_struct_packers_records(model: str, data: st.DataObject) -> None:
    mid = model_id(model)
    items = data.draw(st.lists(payloads(model), min_size=1, max_size=40))
    flags, deadline = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 2**63 - 1))
    walked, packed, own = _both(mid, items, flags, deadline)
    assert own, "the walk refused items msgspec accepted"
    assert walked == packed


@pytest.mark.parametrize("model", _MODELS)
def test_long_ids_and_absent_optional_fields_are_walked(model: str) -> None:
    mid = model_id(model)
    id_key = "component" if model == "failure" else "agentId"
    items = [dict(SAMPLES[model], **{id_key: text}) for text in ("a" * 31, "é" * 100, "ü" * 128, "x")]
    for item in items[::2]:  # optional fields absent or null: their default, zero
        item.pop("historicalGpu", None)
        item["currentGpu"] = None if model == "workload" else item.get("currentGpu")
        if model != "workload":
            item.pop("currentGpu")
    walked, packed, own = _both(mid, items * 5)
    assert own and walked == packed


def test_the_walk_refuses_an_encoding_it_does_not_expect() -> None:
    mid = ModelId.WORKLOAD
    checked = _fastcodec.check_items(mid, [SAMPLES["workload"]] * 3)
    data = np.frombuffer(msgspec.msgpack.encode(checked), np.uint8)
    plan, rows = _fastcodec.batch_plan(mid), np.zeros((3, 320), np.uint8)
    header = np.zeros(5, np.uint64)
    assert _packbatch._write(data, plan, rows, header)
    assert not _packbatch._write(data[:-1], plan, rows, header), "a cut encoding"
    assert not _packbatch._write(np.append(data, np.uint8(0)), plan, rows, header), "a byte past the end"
    assert not _packbatch._write(data, plan, rows[:2], header), "a list of another length"
    negative = data.copy()
    at = bytes(data).index(b"\xa9timeOfDay") + 10  # the value after the key: a positive fixint
    negative[at] = 0xFF  # a negative fixint: never what msgspec makes of a checked hour
    assert not _packbatch._write(negative, plan, rows, header)
