"""The shim's channel: every request of an event-loop tick in one submission, through the C client.

Handlers hand their REQUEST records to ``exchange`` and await the answers. The
first one of a tick schedules ``_flush`` with ``call_soon``, which runs after every
handler already ready in that tick: so one tick's requests, from any number of
connections, go to the daemon with one publish and come back with one call into
``_exchange.c``. That call waits for the answers on the loop's own thread (spin,
then sleep on the completion ring): no thread hand-off, no second event-loop
callback, and nothing to poll. The daemon answers in tens of µs while the HTTP
side spends hundreds per request, so the loop is blocked for a small fraction of
its time; a daemon that stopped is noticed within ~50 ms (its pid, and a heartbeat
older than ``STALE_S``), a slow one within the shim's ``timeout``.

This replaces ``shmd.client.AsyncClient`` in the shim (which stays for Python
users): that client's ring ends are numba-compiled, and numba alone costs a shim
process ~130 MB resident.
"""

from __future__ import annotations

import asyncio
import ctypes
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


class ShimChannel:
    """One attached channel, shared by every handler of one event loop."""

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
        self._next_id = secrets.randbits(63) | 1  # a previous holder's late answers never match
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._flush_scheduled = False
        self.exchanges = 0  # submissions made (each one tick's requests)
        self.requests = 0

    @property
    def dropped(self) -> int:
        """Answers that arrived for no request of the current exchange (late, or a previous holder's)."""
        return int(self._lib.shim_dropped(self._handle)) if self._handle else 0

    async def exchange(self, records: bytes) -> bytes:
        """Send REQUEST records (any model's; ids and submit time are stamped here); their RESPONSE records in order."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((records, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if self._handle is None:
            for _, future in pending:
                if not future.done():
                    future.set_exception(NotReady(f"channel {self.name!r} is closed"))
            return
        reqs = bytearray(b"".join(records for records, _ in pending))
        n = len(reqs) // _REQ
        base = self._next_id
        self._next_id += n
        out = bytearray(n * _RESP)
        done = bytearray(n)
        deadline = time.monotonic_ns() + self.timeout_ns
        got = self._lib.shim_exchange(self._handle, _address(reqs), _address(out), _address(done), n, base,
                                      self.spin_ns, deadline, int(STALE_S * 1e9))  # fmt: skip
        self.exchanges += 1
        self.requests += n
        failure: Exception | None = None
        if got < 0:
            reason = self._lib.shim_message(self._handle).decode(errors="replace")
            failure = from_c_client(got, f"channel {self.name!r}: {reason}")
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

    def close(self) -> None:
        if self._handle is not None:
            self._lib.shim_close(self._handle)
            self._handle = None


__all__ = ["ShimChannel"]
