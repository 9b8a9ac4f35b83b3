"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests._schemathesis_hooks``): msgpack bodies both ways.

The shim reads msgpack request bodies and answers in msgpack when Accept asks for it;
with these, schemathesis sends the msgpack media type the document declares, every
other generated case asks for a msgpack answer, and msgpack responses are validated
against the same schemas as JSON ones.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import schemathesis


def _fit(value: Any) -> Any:
    """``value`` with integers msgpack cannot carry (outside [-2**63, 2**64)) sent as floats, as a client would."""
    if isinstance(value, dict):
        return {k: _fit(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fit(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    return value


@schemathesis.serializer("application/msgpack")
def _pack(_ctx: Any, value: Any) -> bytes:
    return msgpack.packb(_fit(value), use_bin_type=True)


@schemathesis.deserializer("application/msgpack")
def _unpack(_ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False)


_turn = itertools.count()


@schemathesis.hook
def before_call(_ctx: Any, case: Any, _kwargs: Any) -> None:
    if next(_turn) % 2 and not case.path.startswith(("/metrics", "/openapi")):
        case.headers = {**(case.headers or {}), "Accept": "application/msgpack"}
