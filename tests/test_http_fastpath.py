"""The shim's fast path (``http_shim/_fastpath.py``) against aiohttp's own path, on real sockets.

One application, attached to a real daemon's channel, listens twice in a thread's
event loop: through ``Listener`` (``FastPath`` per connection, as ``python -m
http_shim`` serves) and through aiohttp's protocol alone. The same raw HTTP goes to
both: a plain prediction is answered by the fast path with what aiohttp's handler
writes (status line, headers in order, body), anything else is handed to aiohttp
and answered as before, and a connection's requests are answered in order however
they arrive (pipelined, split, mixed with handed-off ones).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from aiohttp import web

from http_shim import create_app
from http_shim._app import SHIM
from http_shim._fastpath import Listener, plain_predict

from ._http_daemon import Daemon, unique_prefix, valid

IO_TIMEOUT_S = 30.0  # a generous bound that only catches a stall


class Servers:
    """The shim's application on one event loop in a thread: ``fast`` port (Listener) and ``plain`` (aiohttp)."""

    def __init__(self, prefix: str, loop_kind: str) -> None:
        if loop_kind == "uvloop":
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fastpath-test-loop", daemon=True)
        self.thread.start()
        self._run(self._start(prefix))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(IO_TIMEOUT_S)

    async def _start(self, prefix: str) -> None:
        app = create_app(prefix, "shim", timeout=5.0)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        assert self.runner.server is not None
        self.listener = Listener(app[SHIM], self.runner.server)
        loop = asyncio.get_running_loop()
        self.fast_server = await loop.create_server(self.listener, "127.0.0.1", 0)
        self.plain_server = await loop.create_server(self.runner.server, "127.0.0.1", 0)
        self.fast = self.fast_server.sockets[0].getsockname()[1]
        self.plain = self.plain_server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self.fast_server.close()
        self.plain_server.close()
        self.listener.close()
        await self.runner.cleanup()

    def counts(self) -> tuple[int, int]:
        return self._run(self._counts())

    async def _counts(self) -> tuple[int, int]:
        return self.listener.answered, self.listener.handed_off

    def close(self) -> None:
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(IO_TIMEOUT_S)
        self.loop.close()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("fast"))
    yield d
    assert not d.stop(), "daemon left shared memory behind"


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def servers(daemon: Daemon, request: pytest.FixtureRequest) -> Iterator[Servers]:
    s = Servers(daemon.prefix, request.param)
    yield s
    s.close()


# --- a raw HTTP/1.1 client ---------------------------------------------------------------------

Response = tuple[str, list[tuple[str, str]], bytes]  # status line, headers in order, body


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def plain(model: str, body: bytes) -> bytes:
    """A request as wrk and curl send it: the fast path's case."""
    return post(f"/api/ml/predict/{model}", body, "Content-Type: application/json")


def read_responses(sock: socket.socket, n: int) -> list[Response]:
    buf, out = b"", []
    while len(out) < n:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            status, *lines = buf[:end].decode().split("\r\n")
            headers = [tuple(line.split(": ", 1)) for line in lines]
            length = int(dict(headers)["Content-Length"])
            if len(buf) >= end + 4 + length:
                out.append((status, headers, buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {n} responses: {buf!r}")
        buf += chunk
    assert buf == b"", f"more than {n} responses: {buf!r}"
    return out


def exchange(port: int, *chunks: bytes, responses: int = 1) -> list[Response]:
    """Send ``chunks`` in turn on a new connection (each its own send) and read ``responses`` answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        return read_responses(sock, responses)


def comparable(resp: Response) -> tuple[str, list[tuple[str, str]], Any]:
    """A response without what differs between two answers to one request (time, latency, cache hit)."""
    status, headers, body = resp
    ctype = dict(headers)["Content-Type"]
    doc = msgpack.unpackb(body) if ctype == "application/msgpack" else json.loads(body)
    for volatile in ("latency_ms", "uptimeS", "daemon"):  # the last two: /health's
        doc.pop(volatile, None)
    for prediction in [doc.get("prediction"), *doc.get("predictions", [])]:
        if isinstance(prediction, dict):
            prediction.pop("cacheHit")
    kept = [(k, "-" if k in ("Date", "Content-Length") else v) for k, v in headers]
    return status, kept, doc


def body_of(model: str, i: int) -> bytes:
    return json.dumps(valid(model, i)).encode()


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["workload", "threat", "failure", "memory"])
def test_a_plain_prediction_is_answered_by_the_fast_path_as_by_the_handler(servers: Servers, model: str) -> None:
    body = body_of(model, 1)
    answered, handed_off = servers.counts()
    (fast,) = exchange(servers.fast, plain(model, body))
    # msgspec decodes every model's plain body but threat's (its anomalies go through shmd._codec)
    took = (answered, handed_off + 1) if model == "threat" else (answered + 1, handed_off)
    assert servers.counts() == took, "the fast path did not answer a plain prediction"
    (reference,) = exchange(servers.plain, plain(model, body))
    assert fast[0] == "HTTP/1.1 200 OK", fast
    assert comparable(fast) == comparable(reference)
    assert int(dict(fast[1])["Content-Length"]) == len(fast[2])


ELSEWHERE = {
    "another endpoint": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "msgpack asked for": post(
        "/api/ml/predict/workload",
        body_of("workload", 2),
        "Content-Type: application/json",
        "Accept: application/msgpack",
    ),
    "a charset in Content-Type": post(
        "/api/ml/predict/workload", body_of("workload", 3), "Content-Type: application/json; charset=utf-8"
    ),
    "a body msgspec refuses": plain("workload", b"{}"),
    "a body that is not JSON": plain("workload", b"{nope"),
    "an unknown model": plain("nope", body_of("workload", 4)),
    "a batch": plain("workload/batch", json.dumps({"features": [valid("workload", 5)]}).encode()),
    "a batch path without a body": b"POST /api/ml/predict/workload/batch HTTP/1.1\r\nHost: x\r\n\r\n",
    "Connection: close": post(
        "/api/ml/predict/workload", body_of("workload", 6), "Content-Type: application/json", "Connection: close"
    ),
    "an unlisted header": post(
        "/api/ml/predict/workload", body_of("workload", 7), "Content-Type: application/json", "X-Trace: 1"
    ),
    "chunked": (
        b"POST /api/ml/predict/workload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    )
    % (len(body_of("workload", 8)), body_of("workload", 8)),
}


@pytest.mark.parametrize("case", list(ELSEWHERE))
def test_anything_else_is_handed_to_aiohttp_and_answered_as_before(servers: Servers, case: str) -> None:
    request = ELSEWHERE[case]
    answered, handed_off = servers.counts()
    (fast,) = exchange(servers.fast, request)
    assert servers.counts() == (answered, handed_off + 1), "the fast path answered what is aiohttp's"
    (reference,) = exchange(servers.plain, request)
    assert comparable(fast) == comparable(reference)


def test_a_connections_requests_are_answered_in_order_however_they_arrive(servers: Servers) -> None:
    bodies = [body_of("workload", 100 + i) for i in range(4)]
    expected = [comparable(exchange(servers.plain, plain("workload", b))[0]) for b in bodies]
    # Pipelined in one send; then one split inside its head and inside its body.
    pipelined = plain("workload", bodies[0]) + plain("workload", bodies[1])
    split = plain("workload", bodies[2])
    got = exchange(servers.fast, pipelined, split[:20], split[20:90], split[90:-5], split[-5:], responses=3)
    assert [comparable(r) for r in got] == expected[:3]
    # A handed-off request between two plain ones: the answers keep the requests' order.
    mixed = plain("workload", bodies[0]) + ELSEWHERE["msgpack asked for"] + plain("workload", bodies[3])
    got = exchange(servers.fast, mixed, responses=3)
    assert [dict(r[1])["Content-Type"] for r in got] == ["application/json; charset=utf-8", "application/msgpack",
                                                          "application/json; charset=utf-8"]  # fmt: skip
    assert comparable(got[0]) == expected[0] and comparable(got[2]) == expected[3]


HEAD = b"POST /api/ml/predict/workload HTTP/1.1\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (HEAD + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", "plain"),
        (HEAD + b"content-type: APPLICATION/JSON\r\ncontent-length: 2\r\n\r\n{}", "plain"),
        (HEAD + b"Content-Length: 2\r\n\r\n{}", "plain"),  # no Content-Type reads as JSON, as in read_raw
        (b"POST /api/ml/pre", "more"),
        (HEAD + b"Content-Length: 2\r\n", "more"),
        (HEAD + b"Content-Length: 2\r\n\r\n{", "more"),
        (b"POST /api/ml/predict/workload/batch HTTP/1.1\r\n\r\n", "aiohttp"),  # short but whole: never waited for
        (b"GET /health HTTP/1.1\r\n\r\n", "aiohttp"),
        (HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Content-Length: +2\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Content-Length: 0\r\n\r\n", "aiohttp"),
        (HEAD + b"Content-Length: 9999999\r\n\r\n{}", "aiohttp"),
        (HEAD + b"\r\n", "aiohttp"),  # no Content-Length
        (HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Content-Length: 2\r\n Folded: yes\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Content-Length : 2\r\n\r\n{}", "aiohttp"),
        (HEAD + b"Accept: application/x-msgpack\r\nContent-Length: 2\r\n\r\n{}", "aiohttp"),
        (b"POST /api/ml/predict/workload HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", "aiohttp"),
        (b"POST /api/ml/predict/workload?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "aiohttp"),
    ],
)
def test_what_the_fast_path_takes(request_bytes: bytes, expected: str) -> None:
    got = plain_predict(request_bytes)
    kind = "more" if got is True else "aiohttp" if got is None else "plain"
    assert kind == expected, got
    if kind == "plain":
        assert isinstance(got, tuple) and request_bytes[got[1] : got[2]] == b"{}"
