"""API items checked in C by msgspec and turned into payload values or records.

``shmd._codec`` checks and converts each item field by field in Python (~15-30 µs an item
here). msgspec checks the same things in C (presence, types, array lengths, string
lengths, float32 and u64 bounds), from a JSON body (the HTTP shim's ``decode_item``,
``decode_batch``: numpy fills each payload column of a batch from one list) or from
Python dicts (``shmd.client``'s ``pack_item``: one item written as a whole REQUEST record by
one generated ``struct.pack_into``, ~1-3 µs; a batch: ``check_items`` + ``pack_records``,
which has msgspec encode the checked items as MessagePack and one compiled pass
(``_packbatch``) write every record, ~0.5 µs an item after the check against ~1.1 µs
packing each with ``struct``). It accepts
a subset of what ``_codec`` accepts, and builds the same records (tests/test_http_fastcodec.py and
tests/test_client_codec.py compare the two on generated items): anything it refuses (an
invalid item, an integer written as 5.0, a numpy scalar, a lone surrogate, a threat's
anomalies) is converted again by the general path, which gives the precise error or the
record.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain
from typing import Annotated, Any, get_args

import msgspec
import numpy as np

from kernel_abi import PAYLOADS, REQUEST, ModelId, hash_str

from . import _wire
from ._codec import MAX_ID_LEN

_F32 = float(np.finfo(np.float32).max)
_F64 = float(np.finfo(np.float64).max)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
_Num = Annotated[float, msgspec.Meta(ge=-_F32, le=_F32)]  # what a float32 field carries
_Stamp = Annotated[float, msgspec.Meta(ge=-_F64, le=_F64)]  # f64 on the wire: finite only
_Count = Annotated[int, msgspec.Meta(ge=0)]  # u64; the upper bound is numpy's cast (msgspec bounds stop at int64)


def _ints(lo: int, hi: int) -> Any:
    return Annotated[int, msgspec.Meta(ge=lo, le=hi)]


def _exactly(item: Any, n: int) -> Any:
    return Annotated[list[item], msgspec.Meta(min_length=n, max_length=n)]


# Per model: (payload field, API field, msgspec type, default when absent or null, or ... when required).
# The same rules as shmd._codec._fill_<model>; a field missing here makes the fast path refuse the model.
_FIELDS: dict[ModelId, tuple[tuple[str, str, Any, Any], ...]] = {
    ModelId.WORKLOAD: (
        ("agent_hash", "agentId", _Id, ...),
        ("historical_cpu", "historicalCpu", _exactly(_Num, 10), ...),
        ("historical_memory", "historicalMemory", _exactly(_Count, 10), ...),
        ("historical_gpu", "historicalGpu", _exactly(_Num, 10), [0.0] * 10),
        ("current_cpu", "currentCpu", _Num, ...),
        ("current_gpu", "currentGpu", _Num, 0.0),
        ("current_memory", "currentMemory", _Count, ...),
        ("time_of_day", "timeOfDay", _ints(0, 23), ...),
        ("day_of_week", "dayOfWeek", _ints(0, 6), ...),
    ),
    ModelId.FAILURE: (
        ("component_hash", "component", _Id, ...),
        ("health_score", "healthScore", _Num, ...),
        ("current_value", "currentValue", _Num, ...),
        ("baseline", "baseline", _Num, ...),
        ("trend", "trend", _Num, ...),
        ("historical_health", "historicalHealth", _exactly(_Num, 20), ...),
        ("time_since_last_failure", "timeSinceLastFailure", _Num, ...),
        ("failure_history", "failureHistory", _exactly(_ints(0, 1), 10), ...),
    ),
    ModelId.MEMORY: (
        ("agent_hash", "agentId", _Id, ...),
        ("access_history", "accessHistory", _exactly(_Num, 20), ...),
        ("access_timestamps", "accessTimestamps", _exactly(_Stamp, 20), ...),
        ("access_types", "accessTypes", _exactly(_ints(0, 2), 20), ...),
        ("current_address", "currentAddress", _Num, ...),
        ("locality_score", "localityScore", _Num, ...),
    ),
}
_HASHED = frozenset({"agent_hash", "component_hash"})


def _types(mid: ModelId) -> tuple[type, msgspec.json.Decoder, msgspec.json.Decoder]:
    """(one item's struct type, its JSON decoder, a batch body's JSON decoder)."""
    fields = []
    for _, api, kind, default in _FIELDS[mid]:
        # null means absent for an optional field (as in _codec); required fields take no null.
        fields.append((api, kind) if default is ... else (api, kind | None, None))
    item = msgspec.defstruct(f"{mid.name.capitalize()}Item", fields, kw_only=True)
    batch = msgspec.defstruct(f"{mid.name.capitalize()}Batch", [("features", list[item])])
    return item, msgspec.json.Decoder(item), msgspec.json.Decoder(batch)


_TYPES = {mid: _types(mid) for mid in _FIELDS}
_REFUSED = (msgspec.ValidationError, msgspec.DecodeError, UnicodeEncodeError)
_U64_MAX = 2**64 - 1


def _values(model: ModelId, item: Any) -> dict[str, Any]:
    """A checked item's payload field values (strings hashed, defaults filled)."""
    values = {}
    for (field, _, _, default), value in zip(_FIELDS[model], msgspec.structs.astuple(item), strict=True):
        if field in _HASHED:
            value = hash_str(value)  # raises on a lone surrogate
        elif value is None:
            value = default
        values[field] = value
    return values


def decode_item(model: ModelId, body: bytes) -> dict[str, Any] | None:
    """One JSON item body as payload field values (strings hashed, defaults filled), or None when
    the general path must decode it."""
    types = _TYPES.get(model)
    if types is None:
        return None
    try:
        values = _values(model, types[1].decode(body))
    except _REFUSED:
        return None
    for field in _U64_FIELDS[model]:  # msgspec's integer bounds stop at int64: the u64 ceiling is here
        value = values[field]
        if (max(value) if isinstance(value, list) else value) > _U64_MAX:
            return None
    return values


def _holds_u64(kind: Any) -> bool:
    """Whether a field's type is ``_Count`` or a list of them."""
    args = get_args(kind)
    return kind is _Count or (bool(args) and get_args(args[0]) == (_Count,))


_U64_FIELDS = {mid: tuple(f for f, _, kind, _ in fields if _holds_u64(kind)) for mid, fields in _FIELDS.items()}


def _packer(model: ModelId) -> Any:
    """``pack(buf, offset, item, flags, deadline_ns)``: the REQUEST record of a checked ``item`` (its
    struct type) written at ``offset`` with one ``struct.pack_into`` (id and submit time 0).

    Generated per model, like ``_records._dict_maker``: the payload's values in struct order as one
    argument list (strings hashed, absent optional fields as their defaults), no list built and
    extended per item (~0.7 µs of ~1 µs an item). The code is made from our own field names only.
    """
    layout = _wire.PAYLOAD[model]
    spec = {field: (i, api, default) for i, (field, api, _, default) in enumerate(_FIELDS[model])}
    env: dict[str, Any] = {"pack_into": layout.struct.pack_into, "head": layout.head, "hash_str": hash_str}
    args = []
    for field in layout.names:  # struct order
        i, api, default = spec[field]
        value = f"item.{api}"
        if default is not ...:
            env[f"default{i}"] = default
            value = f"(default{i} if {value} is None else {value})"
        if field in _HASHED:
            value = f"hash_str({value})"  # raises on a lone surrogate
        args.append(f"*{value}" if field in layout.arrays else value)
    source = "lambda buf, offset, item, flags, deadline_ns: pack_into(buf, offset, *head(flags, deadline_ns), {})"
    return eval(source.format(", ".join(args)), env)  # our own field names, never input


_PACKERS = {mid: _packer(mid) for mid in _FIELDS}
_PACK_REFUSED = (UnicodeEncodeError, struct.error, OverflowError)  # a lone surrogate, an integer past u64


def pack_item(model: ModelId, fields: Any, buf: Any, flags: int = 0, deadline_ns: int = 0) -> bool:
    """Write the REQUEST record for API ``fields`` (Python objects) at the start of ``buf``, as
    ``_wire.Payload.pack_into`` does from ``_codec``'s values; False (``buf`` maybe partly written)
    when the general path must convert them (``shmd._codec`` then names what is wrong)."""
    types = _TYPES.get(model)
    if types is None:
        return False
    try:
        _PACKERS[model](buf, 0, msgspec.convert(fields, types[0]), flags, deadline_ns)
    except (*_REFUSED, *_PACK_REFUSED):
        return False
    return True


def check_items(model: ModelId, items: Sequence[Any]) -> list[Any] | None:
    """API field sets (Python objects) checked by msgspec, for ``pack_checked``; None when the general
    path must convert them (an invalid or unusual item, a model without a fast path, no items)."""
    types = _TYPES.get(model)
    if types is None or not items:
        return None
    try:
        return msgspec.convert(items, list[types[0]])
    except _REFUSED:
        return None


def pack_checked(
    model: ModelId, checked: list[Any], rows: Any, start: int, stop: int, flags: int = 0, deadline_ns: int = 0
) -> bool:
    """Write the REQUEST records of ``checked[start:stop]`` (from ``check_items``) into rows
    ``start..stop`` of ``rows`` (a writable buffer of REQUEST records); False (rows maybe partly
    written) when a value cannot be carried: then the general path must convert the items."""
    pack, size = _PACKERS[model], REQUEST.itemsize
    try:
        for i in range(start, stop):
            pack(rows, i * size, checked[i], flags, deadline_ns)
    except _PACK_REFUSED:
        return False
    return True


_PLANS: dict[ModelId, np.ndarray | None] = {}


def batch_plan(model: ModelId) -> np.ndarray | None:
    """``_packbatch``'s plan of ``model``'s checked struct (made once), or None when it has none."""
    from . import _packbatch  # numba, loaded on first use: the HTTP shim never packs a batch here

    if model not in _PLANS:
        _PLANS[model] = _packbatch.plan(model, _FIELDS[model], _HASHED)
    return _PLANS[model]


def pack_records(model: ModelId, checked: list[Any], records: np.ndarray, flags: int = 0, deadline_ns: int = 0) -> bool:
    """Write the REQUEST records of ``checked`` (from ``check_items``) into ``records`` (zeroed, one each):
    by one compiled pass over their MessagePack encoding (``_packbatch``), else item by item with
    ``pack_checked``; False (records maybe partly written) when the general path must convert the items."""
    from . import _packbatch  # see batch_plan

    field_plan = batch_plan(model)
    if field_plan is not None:
        header = _wire.PAYLOAD[model].header_bytes(flags, deadline_ns)
        if _packbatch.pack_batch(field_plan, checked, records, header):
            return True
    return pack_checked(model, checked, records, 0, len(checked), flags, deadline_ns)


def _payloads(model: ModelId, items: list[Any], payloads: np.ndarray) -> bool:
    """Fill ``payloads`` (records of ``PAYLOADS[model]``) from checked items, column by column;
    False when a value cannot be carried (a lone surrogate, an integer past u64)."""
    columns = zip(*map(msgspec.structs.astuple, items), strict=True)  # field by field, in _FIELDS order
    try:
        for (field, _, _, default), column in zip(_FIELDS[model], columns, strict=True):
            if field in _HASHED:
                column = [hash_str(text) for text in column]  # raises on a lone surrogate
            elif default is not ...:
                column = [default if v is None else v for v in column]
            kind = payloads.dtype[field]
            if kind.shape:  # one flat pass: ~1.4x faster than numpy reading nested lists
                flat = np.fromiter(chain.from_iterable(column), kind.base, len(column) * kind.shape[0])
                payloads[field] = flat.reshape(len(column), *kind.shape)
            else:
                payloads[field] = column  # raises OverflowError past u64
    except (UnicodeEncodeError, OverflowError):
        return False
    return True


def decode_batch(model: ModelId, body: bytes) -> np.ndarray | None:
    """The payload records of a JSON batch body ``{"features": [...]}``, or None when the general
    path must decode it (an invalid or unusual item, a model without a fast path, too many items)."""
    types = _TYPES.get(model)
    if types is None:
        return None
    try:
        items = types[2].decode(body).features
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if not items:
        return None
    payloads = np.zeros(len(items), PAYLOADS[model])
    return payloads if _payloads(model, items, payloads) else None


__all__ = ["check_items", "decode_batch", "decode_item", "pack_checked", "pack_item", "pack_records"]
