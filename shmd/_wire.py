"""REQUEST and RESPONSE records as bytes, packed and read with ``struct`` (the layouts come from kernel_abi).

A single prediction is one 320-byte record out and one 64-byte record back; numpy's
structured arrays cost ~10 µs per field assignment or read at that size, ``struct`` a
fraction of a µs. The formats are derived from the dtypes, so they cannot drift from
the ABI.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, RESPONSE, ModelId

_CODES = {"u1": "B", "u2": "H", "u4": "I", "u8": "Q", "i1": "b", "i2": "h", "i4": "i", "i8": "q", "f4": "f", "f8": "d"}


def _format(dtype: np.dtype) -> tuple[str, tuple[str, ...]]:
    """A little-endian struct format for ``dtype`` (padding as ``x``) and its field names in order."""
    parts, names, at = ["<"], [], 0
    for name, (sub, offset, *_) in sorted(dtype.fields.items(), key=lambda kv: kv[1][1]):
        if offset > at:
            parts.append(f"{offset - at}x")
        base, count = (sub.base, int(np.prod(sub.shape))) if sub.shape else (sub, 1)
        parts.append(f"{count}{_CODES[base.str[1:]]}")
        names.append(name)
        at = offset + sub.itemsize
    if dtype.itemsize > at:
        parts.append(f"{dtype.itemsize - at}x")
    return "".join(parts), tuple(names)


_HEADER_FMT, _HEADER_NAMES = _format(np.dtype([(n, REQUEST.fields[n][0]) for n in REQUEST.names if n != "payload"]))
_HEADER = struct.Struct(_HEADER_FMT)
assert _HEADER_NAMES == ("request_id", "model_id", "abi_version", "flags", "payload_len", "reserved", "submit_ns",
                         "deadline_ns") and _HEADER.size == REQUEST.fields["payload"][1]  # fmt: skip


class Payload:
    """One model's REQUEST record as one struct: the header, then the payload's fields in order."""

    def __init__(self, model: ModelId) -> None:
        self.model = model
        fmt, self.names = _format(PAYLOADS[model])
        self.arrays = frozenset(n for n in self.names if PAYLOADS[model].fields[n][0].shape)
        self.struct = struct.Struct(_HEADER_FMT + fmt[1:])  # one little-endian struct: header, payload
        self.header = (0, model, ABI_VERSION)  # request_id and submit_ns are the channel's to set
        self.length = PAYLOADS[model].itemsize

    def head(self, flags: int, deadline_ns: int) -> list[Any]:
        """The header's values in ``struct`` order (request id and submit time 0): extend with the payload's."""
        return [*self.header, flags, self.length, 0, 0, deadline_ns]

    def header_bytes(self, flags: int, deadline_ns: int) -> bytes:
        """A REQUEST record's header alone (request id and submit time 0), as ``pack_into`` writes it."""
        return _HEADER.pack(*self.head(flags, deadline_ns))

    def pack_into(self, buf: Any, values: dict[str, Any], flags: int = 0, deadline_ns: int = 0) -> None:
        """Write a REQUEST record (id and submit time 0) for payload ``values`` at the start of ``buf``.

        ``values`` maps payload field names to numbers or sequences of numbers; a number the
        field cannot carry raises ``struct.error`` (or OverflowError for a float32).
        """
        flat = self.head(flags, deadline_ns)
        for name in self.names:
            if name in self.arrays:
                flat.extend(values[name])
            else:
                flat.append(values[name])
        self.struct.pack_into(buf, 0, *flat)

    def request(self, values: dict[str, Any]) -> bytes:
        """A REQUEST record (id and submit time left 0: the channel sets them) for payload ``values``."""
        buf = bytearray(REQUEST.itemsize)
        self.pack_into(buf, values)
        return bytes(buf)


PAYLOAD = {mid: Payload(mid) for mid in ModelId}

_RESPONSE_FMT, RESPONSE_FIELDS = _format(RESPONSE)
RESPONSE_STRUCT = struct.Struct(_RESPONSE_FMT)
assert RESPONSE_STRUCT.size == RESPONSE.itemsize
_STATUS = RESPONSE_FIELDS.index("status")
_FLAGS = RESPONSE_FIELDS.index("flags")
_VERSION = RESPONSE_FIELDS.index("model_version")
_OUTPUTS = RESPONSE_FIELDS.index("outputs")  # the first of the outputs: they are last


def read(responses: bytes, i: int) -> tuple[int, int, int, tuple[float, ...]]:
    """(status, flags, model_version, outputs) of the ``i``-th RESPONSE record in ``responses``."""
    row = RESPONSE_STRUCT.unpack_from(responses, i * RESPONSE.itemsize)
    return row[_STATUS], row[_FLAGS], row[_VERSION], row[_OUTPUTS:]


__all__ = ["PAYLOAD", "RESPONSE_FIELDS", "RESPONSE_STRUCT", "Payload", "read"]
