"""A batch's REQUEST records written by compiled code from msgspec's MessagePack encoding of its checked items.

``_fastcodec.check_items`` has msgspec check a batch's items (C, ~0.7 µs an item); writing
each checked item with one generated ``struct.pack_into`` then cost ~1.1 µs more an item
in Python (44 values converted one by one). Here msgspec encodes the checked structs as
MessagePack (C, ~0.25 µs an item: every field, in the struct's order, floats as float64)
and one compiled pass walks those bytes and writes every record: FNV-1a of the id
strings, float64 -> float32 with C's rounding (as ``struct``'s ``f``), integers at their
field's width, absent optional fields (nil) as their default, which is zero.

Nothing is checked twice: msgspec has checked every value already. The walk refuses
(returns False, and the caller converts the items the slow way) anything it does not
expect where it expects it, so an encoding it does not know can never write a wrong record.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from numba import njit

from kernel_abi import PAYLOAD_OFFSET, PAYLOADS, REQUEST, ModelId
from kernel_abi._hash import FNV64_OFFSET, FNV64_PRIME

# How a field's values are written: an FNV-1a hash of a string, or a number of that width.
HASH, F32, F64, U8, U16, U32, U64 = range(7)
_WIDTH = {HASH: 8, F32: 4, F64: 8, U8: 1, U16: 2, U32: 4, U64: 8}
_KINDS = {"f4": F32, "f8": F64, "u1": U8, "u2": U16, "u4": U32, "u8": U64}
# A plan row per field, in the checked struct's order: kind, values (0: a scalar), byte offset in the record.
KIND, COUNT, OFFSET = range(3)

_ENCODER = msgspec.msgpack.Encoder()
_ENCODE_REFUSED = (UnicodeEncodeError, OverflowError)  # a lone surrogate, an integer past u64


def plan(model: ModelId, fields: tuple[tuple[str, str, Any, Any], ...], hashed: frozenset[str]) -> np.ndarray | None:
    """The plan of ``model``'s checked struct (``_fastcodec._FIELDS`` rows: payload field, API field, type,
    default); None unless every field is aligned to its width and every default is zero."""
    payload = PAYLOADS[model]
    rows = []
    for field, api, _, default in fields:
        sub, offset = payload.fields[field][:2]
        kind = HASH if field in hashed else _KINDS.get(sub.base.str[1:])
        count = sub.shape[0] if sub.shape else 0
        zero = default is ... or default == 0 or (isinstance(default, list) and not any(default))
        short = len(api.encode()) < 32 and len(fields) <= 15  # keys are fixstr, structs fixmap (see _write)
        if kind is None or not zero or not short or (PAYLOAD_OFFSET + offset) % _WIDTH[kind]:
            return None
        rows.append((kind, count, PAYLOAD_OFFSET + offset))
    return np.array(rows, np.int64)


def pack_batch(field_plan: np.ndarray, checked: list[Any], records: np.ndarray, header: bytes) -> bool:
    """Write ``checked`` (structs from ``check_items``) as REQUEST records into ``records`` (one each,
    zeroed), each starting with ``header`` (its first ``PAYLOAD_OFFSET`` bytes, a multiple of 8); False when they could
    not all be written (then the general path must convert the items)."""
    if records.ctypes.data % 8 or len(records) != len(checked):
        return False
    try:
        data = _ENCODER.encode(checked)
    except _ENCODE_REFUSED:
        return False
    rows = records.view(np.uint8).reshape(len(records), REQUEST.itemsize)
    return _write(np.frombuffer(data, np.uint8), field_plan, rows, np.frombuffer(header, np.uint64))


@njit(nogil=True, cache=True)
def _write(data, field_plan, rows, header):
    """Walk the encoding of a list of structs (maps: key, value, in the plan's order) into ``rows``.

    One function with no array passed to a helper: numba takes and drops a reference to every
    array handed to a call (atomically), which cost ~50 ns a value, more than the walk itself.
    """
    bits = np.zeros(1, np.uint64)  # a float's bytes; fbits: their value
    fbits = bits.view(np.float64)
    flat = rows.reshape(-1)
    f32, f64, u16, u32, u64 = (
        flat.view(np.float32),
        flat.view(np.float64),
        flat.view(np.uint16),
        flat.view(np.uint32),
        flat.view(np.uint64),
    )
    stride, end = rows.shape[1], data.shape[0]
    n = rows.shape[0]
    # The list's header: a fixarray, or array16 / array32 with a big-endian length.
    if n <= 15:
        ok, at = data[0] == 0x90 + n, 1
    else:
        size = 2 if n <= 0xFFFF else 4
        ok, at = data[0] == (0xDC if size == 2 else 0xDD), 1 + size
        length = 0
        for b in range(1, 1 + size):
            length = (length << 8) | np.int64(data[b])
        ok = ok and length == n
    if not ok:
        return False
    for i in range(n):
        for w in range(header.shape[0]):
            u64[(i * stride) // 8 + w] = header[w]
        if at >= end or data[at] != 0x80 + field_plan.shape[0]:  # a fixmap of the plan's fields
            return False
        at += 1
        for f in range(field_plan.shape[0]):
            if at >= end or not 0xA0 <= data[at] <= 0xBF:  # the key, a short str: the plan knows the order
                return False
            at += 1 + (data[at] - 0xA0)
            kind, count, offset = field_plan[f, KIND], field_plan[f, COUNT], field_plan[f, OFFSET]
            if at >= end:
                return False
            if data[at] == 0xC0:  # nil: an absent optional field, whose default is zero (already there)
                at += 1
                continue
            if kind == HASH:  # a str: its FNV-1a
                tag = data[at]
                if 0xA0 <= tag <= 0xBF:
                    slen, at = np.int64(tag - 0xA0), at + 1
                elif tag == 0xD9 and at + 1 < end:
                    slen, at = np.int64(data[at + 1]), at + 2
                elif tag == 0xDA and at + 2 < end:  # ids of up to MAX_ID_LEN characters reach 16-bit lengths
                    slen, at = np.int64(data[at + 1]) << 8 | np.int64(data[at + 2]), at + 3
                else:
                    return False
                if at + slen > end:
                    return False
                h = np.uint64(FNV64_OFFSET)
                for b in range(at, at + slen):
                    h = (h ^ np.uint64(data[b])) * np.uint64(FNV64_PRIME)
                u64[(i * stride + offset) // 8] = h
                at += slen
                continue
            values = 1
            if count:  # an array of exactly count values (msgspec checked the length): fixarray or array16
                if count <= 15:
                    if data[at] != 0x90 + count:
                        return False
                    at += 1
                else:
                    if at + 2 >= end or data[at] != 0xDC or (np.int64(data[at + 1]) << 8 | data[at + 2]) != count:
                        return False
                    at += 3
                values = count
            width = _WIDTH_OF[kind]
            for v in range(values):
                if at >= end:
                    return False
                tag = data[at]
                is_float = tag == 0xCB
                if tag <= 0x7F:
                    ivalue, at = np.uint64(tag), at + 1
                elif is_float or tag == 0xCF:  # float64, uint64: 8 bytes big-endian
                    if at + 8 >= end:
                        return False
                    # Written out, not a loop of shifts: LLVM makes it one load and a byte swap (~8x faster).
                    ivalue = (
                        (np.uint64(data[at + 1]) << np.uint64(56))
                        | (np.uint64(data[at + 2]) << np.uint64(48))
                        | (np.uint64(data[at + 3]) << np.uint64(40))
                        | (np.uint64(data[at + 4]) << np.uint64(32))
                        | (np.uint64(data[at + 5]) << np.uint64(24))
                        | (np.uint64(data[at + 6]) << np.uint64(16))
                        | (np.uint64(data[at + 7]) << np.uint64(8))
                        | np.uint64(data[at + 8])
                    )
                    at += 9
                elif 0xCC <= tag <= 0xCE:  # uint 8, 16, 32
                    size = 1 << (tag - 0xCC)
                    if at + size >= end:
                        return False
                    ivalue = np.uint64(0)
                    for b in range(at + 1, at + 1 + size):
                        ivalue = (ivalue << np.uint64(8)) | np.uint64(data[b])
                    at += 1 + size
                else:
                    return False  # a negative integer, a float32, anything else: not what msgspec makes here
                if is_float:
                    bits[0] = ivalue
                    fvalue = fbits[0]
                else:
                    fvalue = np.float64(ivalue)
                put = i * stride + offset + v * width
                if kind == F32:
                    f32[put // 4] = np.float32(fvalue)
                elif kind == F64:
                    f64[put // 8] = fvalue
                elif is_float:
                    return False  # an integer field holds integers only (msgspec checked it)
                elif kind == U8:
                    flat[put] = np.uint8(ivalue)
                elif kind == U16:
                    u16[put // 2] = np.uint16(ivalue)
                elif kind == U32:
                    u32[put // 4] = np.uint32(ivalue)
                else:
                    u64[put // 8] = ivalue
    return at == end


_WIDTH_OF = np.array([_WIDTH[k] for k in range(len(_WIDTH))], np.int64)

__all__ = ["pack_batch", "plan"]
