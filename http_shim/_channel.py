"""The shim's channel: every request of an event-loop tick in one submission, through the C client.

Handlers hand their REQUEST records to ``exchange`` and await the answers. The
first one of a tick schedules ``_flush`` with ``call_soon``, which runs after every
handler already ready in that tick: so one tick's requests, from any number of
connections, go to the daemon with one publish (``shim_begin`` in ``_exchange.c``).
The loop does not wait for the answers: a reaper thread of the C library collects
them and makes an eventfd readable, which the loop watches like a socket, so it
reads and writes other connections meanwhile (blocking on the daemon took ~30% of
the shim's time at 64 connections). One exchange is in flight at a time; requests
that come meanwhile go out together as soon as it is over. A daemon that stopped
is noticed within ~50 ms (its pid, and a heartbeat older than ``STALE_S``), a slow
one within the shim's ``timeout``.

This replaces ``shmd.client.AsyncClient`` in the shim (which stays for Python
users): that client's ring ends are numba-compiled, and numba alone costs a shim
process ~130 MB resident.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import time

from kernel_abi import REQUEST, RESPONSE
from shmd import NotReady, ShmdError
from shmd._errors import from_c_client

from . import _native

DEFAULT_SPIN_US = 50.0  # the daemon usually answers within this when it is awake
STALE_S = 2.0  # a daemon heartbeat older than this means the daemon hangs: answer 503 at once
_REQ, _RESP = REQUEST.itemsize, RESPONSE.itemsize


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class _Buffers:
    """The records of one exchange, at fixed addresses (the reaper thread writes ``out`` and ``done``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reqs = bytearray(capacity * _REQ)
        self.out = bytearray(capacity * _RESP)
        self.done = bytearray(capacity)
        self.reqs_at, self.out_at, self.done_at = _address(self.reqs), _address(self.out), _address(self.done)


class ShimChannel:
    """One attached channel, shared by every handler of one event loop (the loop of its first exchange)."""

    def __init__(self, prefix: str, channel: str, *, timeout: float, spin_us: float = DEFAULT_SPIN_US) -> None:
        self.name = channel
        self.timeout_ns = int(timeout * 1e9)
        self.spin_ns = int(spin_us * 1e3)
        self._lib = _native.load()
        msg = ctypes.create_string_buffer(512)
        handle = self._lib.shim_open(prefix.encode(), channel.encode(), msg, len(msg))
        if not handle:
            raise ShmdError(msg.value.decode(errors="replace"))
        self._handle: int | None = handle
        self._fd = self._lib.shim_fd(handle)
        self._loop: asyncio.AbstractEventLoop | None = None  # watching _fd
        self._next_id = secrets.randbits(63) | 1  # a previous holder's late answers never match
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._flush_scheduled = False
        self._inflight: tuple[list[tuple[bytes, asyncio.Future]], int] | None = None  # what the reaper waits for
        self._busy = False  # requests arrived while the last exchange was out
        self._bufs = _Buffers(64)
        self.exchanges = 0  # submissions made (each one tick's requests)
        self.requests = 0

    @property
    def dropped(self) -> int:
        """Answers that arrived for no request of the current exchange (late, or a previous holder's)."""
        return int(self._lib.shim_dropped(self._handle)) if self._handle else 0

    def prewake(self) -> bool:
        """A request is coming (still to be parsed): wake the daemon now if it sleeps; True if it did.

        The daemon's wake-up then overlaps the parse, and the request finds it spinning (a
        wake-up with no work makes its loop spin for its spin window): at one request at a time
        the daemon is asleep when each comes, and its wake-up was most of the exchange.
        """
        return self._handle is not None and bool(self._lib.shim_prewake(self._handle))

    async def exchange(self, records: bytes, *, alone: bool = False) -> bytes:
        """Send REQUEST records (any model's; ids and submit time are stamped here); their RESPONSE records in order.

        ``alone``: no other request is being handled in this process (the caller counts them), so
        none will join this tick's submission: it goes at once, and an answer that comes within
        the inline spin is returned without a turn of the event loop (two turns saved at c=1).
        """
        return await self.submit(records, alone=alone)  # a future settled in _flush is awaited without yielding

    def submit(self, records: bytes, *, alone: bool = False) -> asyncio.Future[bytes]:
        """``exchange`` without the await, for callers outside a coroutine (``_fastpath``): the future
        is already settled on return when the answers came within the inline spin."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._watch(loop)
        future = loop.create_future()
        self._pending.append((records, future))
        if not self._flush_scheduled and self._inflight is None:
            if alone:
                self._flush()
            else:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        return future

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``loop`` call ``_finish`` when the reaper signals (a channel outlives a test's asyncio.run)."""
        self._unwatch()
        loop.add_reader(self._fd, self._finish)
        self._loop = loop

    def _unwatch(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def _flush(self) -> None:
        """Submit every pending request as one exchange (none while one is in flight)."""
        self._flush_scheduled = False
        if self._inflight is not None or not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._handle is None:
            self._fail(pending, NotReady(f"channel {self.name!r} is closed"))
            return
        records = b"".join(r for r, _ in pending) if len(pending) > 1 else pending[0][0]
        n = len(records) // _REQ
        buffers = self._buffers(n)
        buffers.reqs[: len(records)] = records
        buffers.done[:n] = bytes(n)
        base = self._next_id
        self._next_id += n
        # A lone request (nothing came while the last one was out): nothing else for the loop to do,
        # so wait here briefly rather than pay for the reaper's signal and the loop's wake-up.
        inline = 0 if self._busy else self.spin_ns
        rc = self._lib.shim_begin(self._handle, buffers.reqs_at, buffers.out_at, buffers.done_at, n, base, inline,
                                  self.spin_ns, time.monotonic_ns() + self.timeout_ns, int(STALE_S * 1e9))  # fmt: skip
        self.exchanges += 1
        self.requests += n
        if rc < 0:
            self._fail(pending, self._error(rc))
        elif rc == 1:
            self._answer(pending, n)
        else:
            self._inflight = (pending, n)  # the reaper signals when the answers are in

    def _error(self, code: int) -> Exception:
        reason = self._lib.shim_message(self._handle).decode(errors="replace")
        return from_c_client(code, f"channel {self.name!r}: {reason}")

    @staticmethod
    def _fail(pending: list[tuple[bytes, asyncio.Future]], error: Exception) -> None:
        for _, future in pending:
            if not future.done():
                future.set_exception(error)

    def _finish(self) -> None:
        """The reaper signalled: hand out the answers of the exchange in flight, then send the next."""
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        if self._inflight is None:
            return
        (pending, n), self._inflight = self._inflight, None
        self._busy = bool(self._pending)  # requests came while it was out: the loop has work of its own
        self._answer(pending, n)
        self._flush()

    def _answer(self, pending: list[tuple[bytes, asyncio.Future]], n: int) -> None:
        """Settle each pending request's future from the exchange just over (``n`` records)."""
        got = self._lib.shim_result(self._handle)
        failure = self._error(got) if got < 0 else None
        out, done = self._bufs.out, self._bufs.done
        start = 0
        for records, future in pending:
            end = start + len(records) // _REQ
            if future.done():  # the handler went away (client disconnected)
                pass
            elif failure is None and (got == n or all(done[start:end])):
                future.set_result(bytes(out[start * _RESP : end * _RESP]))
            else:
                future.set_exception(
                    failure
                    or NotReady(
                        f"{done[start:end].count(0)} of {end - start} predictions unanswered after "
                        f"{self.timeout_ns / 1e9:g}s on channel {self.name!r}: is the daemon running?"
                    )
                )
            start = end

    def _buffers(self, n: int) -> _Buffers:
        """Request, response and done buffers for ``n`` records: one set, reused (one exchange at a time)."""
        if self._bufs.capacity < n:
            self._bufs = _Buffers(max(n, 2 * self._bufs.capacity))
        return self._bufs

    def close(self) -> None:
        if self._handle is not None:
            self._unwatch()
            self._lib.shim_close(self._handle)  # stops the reaper first: the buffers in flight are free after
            self._handle = None
            if self._inflight is not None:
                self._fail(self._inflight[0], NotReady(f"channel {self.name!r} is closed"))
                self._inflight = None


__all__ = ["ShimChannel"]
