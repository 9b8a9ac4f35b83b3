"""Request bodies in (JSON or msgpack), responses out (JSON unless msgpack is asked for)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import orjson
from aiohttp import web

from ._errors import HttpError

MAX_BODY = 1 << 20  # 1 MiB
JSON_TYPES = frozenset({"application/json"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})
MSGPACK = "application/msgpack"


def wants_msgpack(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(t in accept for t in MSGPACK_TYPES)


async def read_raw(request: web.Request, *, empty: Any = ...) -> tuple[bytes, str] | None:
    """The body's bytes and ``"json"`` or ``"msgpack"``; None for an empty body when ``empty`` is given, else 400.

    A missing Content-Type is read as JSON (what most scripts send); any other
    type than JSON or msgpack is 415.
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise HttpError(413, f"body: must be at most {MAX_BODY} bytes, got {request.content_length}")
    raw = await request.read()  # aiohttp enforces client_max_size while streaming (chunked bodies)
    if not raw:
        if empty is not ...:
            return None
        raise HttpError(400, "body: is required (a JSON object)")
    has_type = "Content-Type" in request.headers
    ctype = request.content_type if has_type else "application/json"
    if ctype in MSGPACK_TYPES:
        return raw, "msgpack"
    if ctype not in JSON_TYPES:
        raise HttpError(415, f"Content-Type: must be application/json or application/msgpack, got {ctype!r}")
    return raw, "json"


def parse(raw: bytes, kind: str) -> Any:
    """A body read by ``read_raw``, decoded."""
    if kind == "msgpack":
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as err:  # msgpack raises several unrelated types for bad input
            raise HttpError(400, f"body: is not valid msgpack: {type(err).__name__}") from None
    try:
        return orjson.loads(raw)  # ~6x faster than json.loads on these bodies
    except orjson.JSONDecodeError:
        pass  # what orjson refuses but json reads (NaN, integers past 64 bits, lone surrogates) gets json's verdict
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HttpError(400, f"body: is not valid JSON: {err}") from None


async def read_body(request: web.Request, *, empty: Any = ...) -> Any:
    """The decoded body; ``empty`` is returned for an empty body when given, else 400 (see ``read_raw``)."""
    got = await read_raw(request, empty=empty)
    return empty if got is None else parse(*got)


def _json_default(obj: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def respond(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    """``body`` as msgpack when the client's Accept asks for it, else JSON."""
    if wants_msgpack(request):
        return web.Response(body=msgpack.packb(body, use_bin_type=True), status=status, content_type=MSGPACK)
    return web.Response(body=dump_json(body), status=status, content_type="application/json", charset="utf-8")


def dump_json(body: dict[str, Any]) -> bytes:
    """A response body as compact JSON."""
    try:
        return orjson.dumps(body)  # ~10x faster than json.dumps; compact like separators=(",", ":")
    except orjson.JSONEncodeError:  # an integer past 64 bits: json writes it
        return json.dumps(body, separators=(",", ":"), allow_nan=False, default=_json_default).encode()


__all__ = ["MAX_BODY", "MSGPACK", "dump_json", "parse", "read_body", "read_raw", "respond", "wants_msgpack"]
