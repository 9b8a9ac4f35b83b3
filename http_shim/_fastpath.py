"""A single JSON prediction answered without aiohttp's request machinery, on the same port.

Every connection starts with ``FastPath``, a plain asyncio protocol. A request it can
read whole and that is plainly ``POST /api/ml/predict/{model}`` over HTTP/1.1 with a
JSON body that msgspec decodes (the common case: what wrk, curl and the Python
clients send) is answered here, from ``data_received``: the request goes to the
daemon at once and, when the answer comes within the channel's inline spin, the
response is written in the same call, with no task, future wake-up or turn of the
event loop. aiohttp's request path (its parser feeding a per-connection task, the
request object, the middleware, the router, the response's header machinery) took
~50 µs more per request at c=1 than the bare aiohttp endpoint's whole request
(docs/ARCHITECTURE.md, "Measured here").

Anything else (another method or path, a header not in ``_PLAIN``, a body msgspec
refuses, msgpack asked for, chunked, HTTP/1.0, a head not yet whole past 8 KiB...)
hands the connection, with the bytes not yet answered, to aiohttp's own protocol
for good: so every other endpoint, status, header and error message is aiohttp's, and
the fast answers are byte for byte what the predict handler writes (the same
headers in the same order, the same body; ``tests/test_http_fastpath.py``
compares them). A connection's requests are answered in order: one at a time.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import re
import time
from http import HTTPStatus

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_nodelay

from kernel_abi import ModelId
from shmd import _codec as _shmd_codec
from shmd._errors import DaemonError

from ._app import MODELS, Shim, ms_since, refusal
from ._codec import dump_json

_REQUEST_LINE = re.compile(rb"POST /api/ml/predict/([a-z]{1,32}) HTTP/1\.1\r\n")
# One header line: a token, a colon, a value of visible ASCII (what llhttp reads the same way).
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}):[ \t]*([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?[ \t]*")
# Headers a plain predict request may carry; any other sends the connection to aiohttp.
_PLAIN = frozenset({b"host", b"user-agent", b"accept", b"accept-encoding", b"content-type", b"content-length",
                    b"connection"})  # fmt: skip
MAX_HEAD = 8192  # aiohttp's own limit on a request line or header is 8190 bytes
MAX_FAST_BODY = 64 * 1024  # a single prediction's body is ~600 bytes
KEEPALIVE_S = 75.0  # aiohttp's default: an idle connection is closed after this
_MODEL_IDS = {name.encode(): _shmd_codec.model_id(name) for name in MODELS}
_PATHS = {mid: f"/api/ml/predict/{name.decode()}" for name, mid in _MODEL_IDS.items()}


class _Date:
    """The Date header's value, formatted once a second (as aiohttp does)."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, email.utils.formatdate(t, usegmt=True)
        return cls.value


def response_bytes(status: int, body: bytes) -> bytes:
    """A JSON response exactly as aiohttp writes ``web.Response(body=..., content_type="application/json",
    charset="utf-8")`` to an HTTP/1.1 keep-alive request."""
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nDate: {_Date.now()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def plain_predict(buf: bytes) -> tuple[ModelId, int, int] | bool | None:
    """(model, body start, body end) of the plain predict request at the start of ``buf``; True when its
    head or body is not all there yet; None when it is anything else (aiohttp's to answer)."""
    line = _REQUEST_LINE.match(buf)
    if line is None:  # not a plain predict, unless its request line has not all come yet
        whole = len(buf) >= 64 or b"\r\n" in buf
        return None if whole or not b"POST /api/ml/predict/".startswith(buf[:21]) else True
    mid = _MODEL_IDS.get(line.group(1))
    if mid is None:
        return None
    head_end = buf.find(b"\r\n\r\n", line.end() - 2)
    if head_end < 0:
        return True if len(buf) < MAX_HEAD else None
    length = -1
    for raw in buf[line.end() : head_end].split(b"\r\n") if head_end > line.end() else ():
        header = _HEADER.fullmatch(raw)
        if header is None:
            return None
        name, value = header.group(1).lower(), header.group(2) or b""
        if name not in _PLAIN:
            return None
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 6:
                return None
            length = int(value)
        elif name == b"content-type":
            if value.lower() != b"application/json":
                return None
        elif name == b"connection":
            if value.lower() != b"keep-alive":
                return None
        elif name == b"accept" and b"msgpack" in value.lower():
            return None
    if length <= 0 or length > MAX_FAST_BODY:
        return None
    start = head_end + 4
    return True if len(buf) < start + length else (mid, start, start + length)


class FastPath(asyncio.Protocol):
    """One connection: plain predictions answered here, the rest handed to ``aiohttp`` (``server``'s protocol)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._shim = listener.shim
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._waiting: asyncio.Future[bytes] | None = None  # the daemon's answer to the request in hand
        self._paused = False  # the peer is not reading our answers
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        tcp_nodelay(transport, True)  # as aiohttp does
        self._listener.open.add(self)
        self._shim.alone(transport)  # counted among the worker's connections
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._idle_handle = loop.call_later(KEEPALIVE_S, self._close_if_idle)

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if self._waiting is None and not self._paused:
            self._serve()

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.open.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self._waiting is not None:
            self._waiting.cancel()  # the channel skips an answer nobody waits for
        self._transport = None

    def pause_writing(self) -> None:
        self._paused = True  # answer nothing more until the peer reads what it has
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            if self._waiting is None:
                self._serve()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- requests ----------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer the plain predictions at the head of the buffer, one at a time; hand off at anything else."""
        while self._buf and self._transport is not None and not self._paused:
            t0 = time.perf_counter()
            got = plain_predict(self._buf)
            if got is True:
                return  # wait for the rest
            records = self._shim.single_records(got[0], self._buf[got[1] : got[2]]) if got else None
            if records is None:
                self._hand_off()
                return
            mid, _, end = got  # type: ignore[misc]
            self._buf = self._buf[end:]
            self._last = asyncio.get_running_loop().time()
            assert self._shim.client is not None
            future = self._shim.client.submit(records, alone=self._shim.alone(self._transport))
            if not future.done():
                self._waiting = future
                future.add_done_callback(functools.partial(self._answered, mid=mid, records=records, t0=t0))
                return
            self._answer(future, mid, records, t0)

    def _answered(self, future: asyncio.Future[bytes], *, mid: ModelId, records: bytes, t0: float) -> None:
        self._waiting = None
        if future.cancelled() or self._transport is None:
            return
        self._answer(future, mid, records, t0)
        self._serve()

    def _answer(self, future: asyncio.Future[bytes], mid: ModelId, records: bytes, t0: float) -> None:
        assert self._transport is not None
        status, body = 200, {}
        try:
            (prediction,) = self._shim.answers(mid, records, future.result())
            if isinstance(prediction, DaemonError):
                raise prediction
            body = {"success": True, "prediction": prediction, "latency_ms": ms_since(t0)}
        except Exception as exc:  # what the predict handler's error middleware answers
            status, body = refusal(exc, "POST", _PATHS[mid])
        self._transport.write(response_bytes(status, dump_json(body)))
        self._listener.answered += 1

    def _hand_off(self) -> None:
        """aiohttp's protocol takes the connection for good, with the bytes not yet answered."""
        transport, rest = self._transport, self._buf
        assert transport is not None
        self._buf = b""
        self.connection_lost(None)
        self._listener.handed_off += 1
        handler = self._listener.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:
            handler.pause_writing()
            transport.resume_reading()  # aiohttp's own flow control takes over
        if rest:
            handler.data_received(rest)

    def _close_if_idle(self) -> None:
        if self._transport is None:
            return
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self._last
        if self._waiting is None and idle_for >= KEEPALIVE_S:
            self._transport.close()
            return
        self._idle_handle = loop.call_later(max(KEEPALIVE_S - idle_for, 1.0), self._close_if_idle)


class Listener:
    """The listening socket's protocol factory: a ``FastPath`` for each connection, over ``shim``'s channel,
    handing what it does not answer to ``server`` (aiohttp's protocol factory for the application)."""

    def __init__(self, shim: Shim, server: web.Server) -> None:
        self.shim = shim
        self.server = server
        self.open: set[FastPath] = set()  # closed at shutdown (aiohttp closes the connections it took)
        self.answered = 0  # requests answered by the fast path
        self.handed_off = 0  # connections handed to aiohttp

    def __call__(self) -> FastPath:
        return FastPath(self)

    def close(self) -> None:
        for conn in list(self.open):
            conn.close()


__all__ = ["FastPath", "Listener", "plain_predict", "response_bytes"]
