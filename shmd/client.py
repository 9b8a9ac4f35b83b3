"""The Python client of a shmd channel.

    from shmd.client import Client
    with Client("scheduler", prefix="shmd") as c:
        c.predict("workload", {...})          # -> {"predictedCpu": ..., ...}
        c.predict_many("threat", [{...}, ...])

A client holds its channel exclusively (a POSIX record lock on the segment,
which the OS drops when the process dies), builds a batch's records and
copies them into the ring with one index store per ring-full, and waits on
the completion ring by spinning briefly and then sleeping on the wake-up
protocol. (Callers that want to write slots in place use ``ringbuf``'s
``Producer.reserve``/``commit``.)

Request ids start at a random 62-bit base per client, so responses meant for
a previous holder of the channel, or duplicates the daemon re-sends after a
crash, carry ids this client does not have outstanding: they are dropped
(and counted in ``dropped``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, RESPONSE, ModelId

from . import _codec, _exchange, _lock, _records
from ._breaker import Breaker, Fallback
from ._edge_cache import EdgeCache
from ._errors import ChannelBusy, NotReady, ShmdError, from_ring_error

DEFAULT_PREFIX = "shmd"
DEFAULT_TIMEOUT = 5.0

_HEADER_STAMPS = {mid: _exchange.header_stamp(mid) for mid in PAYLOADS}  # predict_records': by model id
_held: set[str] = set()  # segments held by this process (record locks do not conflict within one)


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns, the clock of submit_ns and deadline_ns."""
    return time.monotonic_ns()


class Client:
    """One attached channel. Not thread-safe: use one client per thread."""

    def __init__(
        self,
        channel: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        spin_us: float = ringbuf.DEFAULT_SPIN_US,
        daemon_uid: int | None = None,
        edge_cache: int = 0,
        fallback: Fallback | None = None,
        cooldown: float = 0.2,
        trip_after: int = 3,
    ) -> None:
        """Attach to ``channel`` of the daemon serving ``prefix``.

        ``edge_cache``: keep up to this many of the daemon's answers and serve
        identical ``predict`` calls from them (see ``shmd._edge_cache``); 0, the
        default, keeps none. ``fallback(model, fields) -> dict``: put ``predict``
        behind a circuit breaker (``shmd._breaker``) opened by ``trip_after``
        missed deadlines in a row or a gone daemon, probing again after
        ``cooldown`` seconds.
        """
        if edge_cache < 0:
            raise ValueError(f"edge cache capacity must be >= 0 (0: none): edge_cache={edge_cache}")
        self.timeout = timeout
        self.spin_us = spin_us
        self._breaker = None if fallback is None else Breaker(fallback, cooldown=cooldown, trip_after=trip_after)
        # The segment must be the daemon's: daemon_uid, else $SHMD_DAEMON_UID, else root/us/shmd (UntrustedObject).
        try:
            self.channel = ringbuf.Channel.attach(prefix, channel, trust=ringbuf.Trust.daemon(daemon_uid))
        except ringbuf.RingError as err:
            raise from_ring_error(err) from None
        try:
            self._hold()
        except BaseException:
            self.channel.close()
            raise
        self._sq = ringbuf.Producer(self.channel.sq)
        self._cq = ringbuf.Consumer(self.channel.cq)
        self._edge = EdgeCache(self.channel.header, edge_cache) if edge_cache else None
        self._next_id = secrets.randbits(62) | 1  # ids stay within the compiled exchange's int64
        self._outstanding: set[int] = set()
        self._results: dict[int, np.ndarray] = {}  # answers of the batch being collected, by id
        self._parked: list[np.ndarray] = []  # answers to submit()ted ids met while collecting: reap() returns them
        self._dropped = 0
        try:
            self._prepare_exchange()
        except BaseException:  # e.g. a corrupt ring: let go of the hold, or this process could never attach again
            self.close()
            raise

    def _prepare_exchange(self) -> None:
        """Buffers of the compiled round trip, made once; its code loaded now, not on the first call."""
        # With one CPU to run on, spinning would only keep the daemon we wait for off it.
        spin_max = int(self.spin_us * 1000) if len(os.sched_getaffinity(0)) > 1 else 0
        self._words = _exchange.new_words(spin_max)
        self._scratch = np.zeros((self.channel.cq.capacity, RESPONSE.itemsize), np.uint8)
        # predict()'s request and answer rows: packed and read in place with struct, never reallocated.
        self._one_row = np.zeros((1, REQUEST.itemsize), np.uint8)
        self._one_resp_row = np.zeros((1, RESPONSE.itemsize), np.uint8)
        sq, cq = self.channel.sq, self.channel.cq
        self._rings = (sq.hdr64, sq.hdr32, sq.slots, self._sq.state, cq.hdr64, cq.hdr32, cq.slots, self._cq.state)
        # predict()'s exchange as one descriptor (addresses of the arrays above, which this client keeps).
        self._one_described = (
            _exchange.describe(*self._rings, self._one_row, self._one_resp_row, self._scratch, self._words),
        )
        self._one_entry = _exchange.described_entry(self._one_described[0])
        self._batch_entry = _exchange.batch_entry(self._one_described[0])  # predict_records'
        # Empty exchanges load (or compile) the code of both; answers a previous holder left are dropped.
        empty = (self._one_row[:0], self._one_resp_row[:0])
        self._exchange(*empty)
        self._round_trip(_exchange.exchange_described,
                         (_exchange.describe(*self._rings, *empty, self._scratch, self._words),), 0, 0)  # fmt: skip

    def _hold(self) -> None:
        seg = self.channel.segment
        pid = _lock.try_lock(self.channel.fd) if seg not in _held else -1
        if pid:
            who = "this process" if pid < 0 else f"pid {pid}"
            raise ChannelBusy(
                f"channel {self.channel.name!r} (prefix {self.channel.prefix!r}) is held by {who}; "
                "detach there first or pick another channel"
            )
        _held.add(seg)

    # --- low level: numpy records with caller-chosen ids ---------------------

    def new_ids(self, n: int) -> np.ndarray:
        """``n`` fresh request ids for records built by the caller."""
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.uint64)
        self._next_id += n
        return ids

    def submit(self, records: np.ndarray) -> int:
        """Publish REQUEST records (ids chosen by the caller); how many fit.

        Fewer than ``len(records)`` (maybe 0) are taken when the ring is full:
        back-pressure, resubmit the rest after reaping.
        """
        try:
            accepted = self._sq.produce(records.view(REQUEST))
        except ringbuf.RingError as err:
            raise from_ring_error(err) from None
        self._outstanding.update(int(i) for i in records["request_id"][:accepted])
        return accepted

    def reserve(self, n: int, model: str) -> list[np.ndarray]:
        """Up to ``n`` free submission slots, as ``REQUESTS[model]`` records to fill in place.

        At most two views (the run may wrap around the ring's end), their header
        filled (fresh ids, model, version, length; flags and deadline 0): write
        the payloads, then ``commit`` the views. Fewer than ``n`` when the ring
        is fuller. Nothing is copied: the records are written in shared memory.
        """
        mid = _codec.model_id(model)
        views = self._sq.reserve(n, REQUESTS[mid])
        for v in views:
            v["request_id"] = self.new_ids(len(v))
            v["model_id"], v["abi_version"], v["payload_len"] = mid, ABI_VERSION, PAYLOADS[mid].itemsize
            v["flags"] = v["deadline_ns"] = 0
        return views

    def commit(self, views: list[np.ndarray]) -> int:
        """Publish records written through ``reserve`` (stamped now); answers come via ``wait``/``reap``."""
        submit, n = now_ns(), 0
        for v in views:
            v["submit_ns"] = submit
            self._outstanding.update(v["request_id"].tolist())
            n += len(v)
        self._sq.commit(n)
        return n

    def reap(self, max_n: int | None = None) -> np.ndarray:
        """Completions ready now (RESPONSE records) for ids this client has outstanding."""
        limit = max_n or self.channel.cq.capacity
        parked, self._parked = self._parked[:limit], self._parked[limit:]
        got = self._reap_ring(limit - len(parked))
        return np.concatenate([np.array(parked, RESPONSE), got]) if parked else got

    def _reap_ring(self, max_n: int) -> np.ndarray:
        if max_n <= 0:
            return np.zeros(0, RESPONSE)
        try:
            got = self._cq.consume(max_n)
        except ringbuf.RingError as err:
            raise from_ring_error(err) from None
        if not len(got):
            return got
        self._sq.nudge()  # the daemon may have stopped draining our SQ for want of CQ room
        ids = got["request_id"].tolist()
        keep = [i in self._outstanding for i in ids]
        if not all(keep):  # duplicates after a daemon restart, or a previous holder's answers
            self._dropped += keep.count(False)
            got = got[np.array(keep)]
            ids = got["request_id"].tolist()
        self._outstanding.difference_update(ids)
        return got

    def _exchange(self, rows: np.ndarray, out: np.ndarray, wait_ns: int = 0) -> None:
        """Publish REQUEST ``rows`` (uint8[n, slot]) under fresh ids, answers into ``out`` rows, in order.

        Waits until CLOCK_MONOTONIC ``wait_ns`` (0: for the client's timeout), then raises NotReady.
        """
        self._round_trip(_exchange.exchange, (*self._rings, rows, out, self._scratch, self._words), len(rows), wait_ns)

    def _round_trip(self, compiled: Any, args: tuple[Any, ...], n: int, wait_ns: int, stamp: int = 0) -> None:
        """``compiled(*args, first_id, timeout_ns)`` (an exchange of ``n`` records) until every answer is in;
        ``stamp``: the header fields it writes into every request (``_exchange.header_stamp``), or 0: none."""
        self._words[_exchange.STAMP] = stamp
        first = self._next_id
        self._next_id += n or 1  # a new first id for every call: that is what starts a new batch
        timeout_ns = max(wait_ns - now_ns(), 0) if wait_ns else int(self.timeout * 1e9)
        while (rc := compiled(*args, first, timeout_ns)) != _exchange.DONE:
            if rc == _exchange.CORRUPT:
                try:
                    self._cq.ready()  # raises RingCorrupt naming the ring and indices
                    self._sq.space()
                except ringbuf.RingError as err:
                    raise from_ring_error(err) from None
            if now_ns() >= self._words[_exchange.DEADLINE]:
                waited = f"{self.timeout}s" if not wait_ns else "the deadline"
                raise NotReady(
                    f"{n - int(self._words[_exchange.GOT])} of {n} predictions unanswered after {waited} "
                    f"on channel {self.channel.name!r}: is the daemon running (prefix {self.channel.prefix!r})?"
                )

    def wait(self, timeout: float | None = None) -> int:
        """Block until completions are ready (spin, then sleep); the ready count."""
        if self._parked:
            return len(self._parked)
        return self._wait_ring(self.timeout if timeout is None else timeout)

    def _wait_ring(self, timeout: float) -> int:
        try:
            return self._cq.wait(timeout, self.spin_us)
        except ringbuf.RingError as err:
            raise from_ring_error(err) from None

    def forget(self, ids: Sequence[int]) -> None:
        """Stop waiting for these ids: a late answer is then dropped as unknown, not kept."""
        self._outstanding.difference_update(ids)
        for i in ids:
            self._results.pop(i, None)
        if self._parked:
            gone = set(ids)
            self._parked = [r for r in self._parked if int(r["request_id"]) not in gone]

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def stats(self) -> dict[str, Any]:
        """This client's own counters: edge cache hits and misses, the breaker's answers, misses, trips."""
        out: dict[str, Any] = {"dropped": self.dropped}
        if self._edge is not None:
            out.update(local_hits=self._edge.hits, local_misses=self._edge.misses, local_entries=len(self._edge))
        if self._breaker is not None:
            out.update(self._breaker.snapshot())
        return out

    @property
    def dropped(self) -> int:
        """Answers dropped as not this client's (a previous holder's, duplicates after a daemon restart)."""
        return self._dropped + int(self._words[_exchange.DROPPED])

    # --- high level: API dicts ------------------------------------------------

    def predict(
        self,
        model: str,
        fields: Mapping[str, Any],
        *,
        deadline_ms: float | None = None,
        no_cache: bool = False,
    ) -> dict[str, Any]:
        """One prediction: API ``fields`` in, the API ``prediction`` dict out.

        The record is packed (struct) into a buffer made at attach, one compiled
        call publishes, waits and reaps, and the answer is read back with struct:
        no numpy allocation per call. With an edge cache, a repeat may be
        answered locally (``cacheHit`` and ``local`` true); with a fallback, the
        breaker may answer instead (``fallback`` true), and the wait ends at
        ``deadline_ms``.
        """
        mid = _codec.model_id(model)
        edge = self._edge
        if edge is None or no_cache or (key := edge.key(mid, fields)) is None:
            return self._guarded(model, mid, fields, deadline_ms, no_cache)
        hit = edge.get(key)
        if hit is not None:
            return hit
        stamp = edge.stamp(mid)
        result = self._guarded(model, mid, fields, deadline_ms, no_cache)
        edge.store(key, stamp, result)
        return result

    def _guarded(
        self, model: str, mid: ModelId, fields: Mapping[str, Any], deadline_ms: float | None, no_cache: bool
    ) -> dict[str, Any]:
        """The daemon's answer, or the breaker's fallback when there is one."""
        if self._breaker is None:
            return self._ask(mid, fields, deadline_ms, no_cache)
        return self._breaker.call(
            model, fields, self.channel.header, lambda: self._ask(mid, fields, deadline_ms, no_cache, bounded=True)
        )

    def _ask(
        self, mid: ModelId, fields: Mapping[str, Any], deadline_ms: float | None, no_cache: bool, bounded: bool = False
    ) -> dict[str, Any]:
        """One round trip; ``bounded``: wait no longer than the deadline."""
        if self._outstanding:  # records submitted with submit(): keep their answers for reap()
            return self._many(mid, [fields], deadline_ms, no_cache, False)[0]
        deadline = 0 if deadline_ms is None else now_ns() + int(deadline_ms * 1e6)
        _records.pack_request(mid, fields, self._one_row, flags=REQ_NO_CACHE if no_cache else 0, deadline_ns=deadline)
        self._round_trip(self._one_entry, self._one_described, 1, deadline if bounded else 0)
        return _records.read_answer(mid, self._one_resp_row, fields)

    def predict_records(self, model: str, records: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Zero-copy path: REQUEST records in (``REQUESTS[model]`` or ``REQUEST`` dtype), RESPONSE records out.

        The caller fills the payloads (and, if it wants, ``flags`` and
        ``deadline_ns``); the compiled exchange writes model_id, abi_version,
        payload_len, request_id and submit_ns into each record as it publishes
        it: into ``records`` itself when it is writeable and contiguous, else
        into a copy. The records are copied into the ring straight from there;
        answers come back in order, statuses unchecked (``Status.OK`` = 0),
        into ``out`` (a ``RESPONSE`` array as long as ``records``, reused
        across calls: no allocation per call) or a new array. For building
        records in the ring itself, see ``reserve``/``commit``.
        """
        mid = _codec.model_id(model)
        n = len(records)
        if records.dtype.itemsize != REQUEST.itemsize or records.ndim != 1:
            raise ValueError(
                f"records must be a 1-d array of REQUEST records: itemsize={records.dtype.itemsize} "
                f"ndim={records.ndim}, expected itemsize={REQUEST.itemsize} ndim=1"
            )
        if self._outstanding:
            raise ChannelBusy("predict_records with submit()ted records outstanding: reap() them first")
        if out is None:  # made as bytes (the exchange marks every row unanswered itself): ~1 µs less than np.empty
            answers = np.empty(n * RESPONSE.itemsize, np.uint8)
            out = answers.view(RESPONSE)
        elif out.dtype != RESPONSE or out.shape != (n,) or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                f"out must be a writeable contiguous RESPONSE array of len(records): dtype={out.dtype} "
                f"shape={out.shape}, expected shape=({n},)"
            )
        else:
            answers = out.view(np.uint8)
        sent = records if records.flags.c_contiguous and records.flags.writeable else records.copy()
        args = (self._one_described[0], sent.view(np.uint8), answers)
        self._round_trip(self._batch_entry, args, n, 0, _HEADER_STAMPS[mid])
        return out

    def predict_many(
        self,
        model: str,
        items: Sequence[Mapping[str, Any]],
        *,
        deadline_ms: float | None = None,
        no_cache: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Many predictions, published together (one index store per ring-full).

        Raises the first item's error (its ``item`` is the index in a batch),
        unless ``return_exceptions`` puts exceptions in the result list. With a
        fallback, the call is behind the breaker as ``predict`` is: the wait
        ends at ``deadline_ms``, and every item the daemon cannot answer (open
        breaker, gone daemon, missed deadline, OVERLOADED, INTERNAL) gets the
        fallback's answer (``fallback`` true); invalid items still raise.
        """
        mid = _codec.model_id(model)
        if self._breaker is None:
            return self._many(mid, items, deadline_ms, no_cache, return_exceptions)
        results = self._breaker.call_many(
            model, items, self.channel.header, lambda: self._many(mid, items, deadline_ms, no_cache, True, bounded=True)
        )
        return results if return_exceptions else _records.raise_first(results)

    def _many(
        self,
        mid: ModelId,
        items: Sequence[Mapping[str, Any]],
        deadline_ms: float | None,
        no_cache: bool,
        return_exceptions: bool,
        bounded: bool = False,
    ) -> list[Any]:
        """One batch's round trip; ``bounded``: wait no longer than the deadline."""
        with _records.gc_paused():
            records = self._build(mid, items, deadline_ms, no_cache)
        if self._outstanding:
            responses = self._roundtrip(records)
        else:
            responses = np.zeros(len(records), RESPONSE)
            rows = records.view(np.uint8).reshape(len(records), -1)
            wait_ns = int(records["deadline_ns"][0]) if bounded and len(records) else 0
            self._exchange(rows, responses.view(np.uint8).reshape(len(records), -1), wait_ns)
        with _records.gc_paused():
            return _records.predictions(mid, responses, items, return_exceptions=return_exceptions)

    def _build(
        self, mid: ModelId, items: Sequence[Mapping[str, Any]], deadline_ms: float | None, no_cache: bool
    ) -> np.ndarray:
        submit = now_ns()
        deadline = 0 if deadline_ms is None else submit + int(deadline_ms * 1e6)
        records = _records.build_requests(mid, items, submit_ns=submit, deadline_ns=deadline, no_cache=no_cache)
        records["request_id"] = self.new_ids(len(items))
        return records

    def _roundtrip(self, records: np.ndarray) -> np.ndarray:
        """Submit all records (as space allows) and collect their responses in order."""
        ids = [int(i) for i in records["request_id"]]
        try:
            return self._collect(records, ids)
        except BaseException:  # timed out, corrupt channel, interrupted: nothing of this call stays behind
            self.forget(ids)
            raise

    def _collect(self, records: np.ndarray, ids: list[int]) -> np.ndarray:
        sent = 0
        wanted = set(ids)
        deadline = time.monotonic() + self.timeout
        while True:
            if sent < len(records):
                sent += self.submit(records[sent:])
                self._wait_ring(min(deadline - time.monotonic(), 0.05))
            for resp in self._reap_ring(self.channel.cq.capacity):
                rid = int(resp["request_id"])
                if rid in wanted:
                    self._results[rid] = resp
                else:  # an answer to a submit()ted record: reap() hands it over
                    self._parked.append(resp)
            if sent == len(records) and all(i in self._results for i in ids):
                return np.array([self._results.pop(i) for i in ids], RESPONSE)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sum(i not in self._results for i in ids)
                raise NotReady(
                    f"{missing} of {len(ids)} predictions unanswered after {self.timeout}s on channel "
                    f"{self.channel.name!r}: is the daemon running (prefix {self.channel.prefix!r})?"
                )
            self._wait_ring(min(remaining, 0.05) if sent < len(records) else remaining)

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Release the channel (the next holder may attach at once)."""
        if self.channel.segment in _held:
            _held.discard(self.channel.segment)
            _lock.unlock(self.channel.fd)
        self._sq = self._cq = None  # type: ignore[assignment]
        self._edge = None  # its views of the header go with the mapping
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Batch:
    """One submission's answers: a single future, resolved when the last one lands."""

    def __init__(self, future: asyncio.Future, n: int) -> None:
        self.future = future
        self.responses = np.zeros(n, RESPONSE)
        self.remaining = n


class _Slot:
    """Where one request id's answer goes."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index

    def answer(self, resp: np.ndarray) -> None:
        b = self.batch
        b.responses[self.index] = resp
        b.remaining -= 1
        if b.remaining == 0 and not b.future.done():
            b.future.set_result(b.responses)


class AsyncClient:
    """An asyncio front for one channel, shared by many concurrent tasks.

    Submissions happen on the event loop. While requests are in flight the
    loop itself polls the completion ring between its other callbacks: no
    thread hand-off, no futex wait, and the daemon need not wake anyone. Only
    after ``poll_us`` without an answer does a reaper thread take over the
    wait (sleeping on the wake-up protocol) so a slow answer costs no CPU;
    once it has an answer it hands the ring back to the loop.

    Exactly one of the two reads the completion ring at any time (a ring's
    consumer state is single-threaded): the hand-over goes through
    ``_reaper_active``, changed only under ``_lock``.
    """

    def __init__(
        self,
        channel: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        poll_us: float = 200.0,
        daemon_uid: int | None = None,
        edge_cache: int = 0,
        fallback: Fallback | None = None,
        cooldown: float = 0.2,
        trip_after: int = 3,
    ) -> None:
        """As ``Client``; ``edge_cache`` and ``fallback`` apply to ``predict``."""
        # The reaper thread only runs once polling gave up: it sleeps at once.
        self._client = Client(
            channel, prefix, timeout=timeout, spin_us=0, daemon_uid=daemon_uid, edge_cache=edge_cache,
            fallback=fallback, cooldown=cooldown, trip_after=trip_after,
        )  # fmt: skip
        self.timeout = timeout
        self.poll_ns = int(poll_us * 1000)
        self._futures: dict[int, _Slot] = {}  # request id -> where its answer goes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._polling = False
        self._progress_ns = 0
        self._reaper_active = False
        self._sleeper = threading.Event()  # set: the reaper thread owns the completion ring
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the outstanding ids and the hand-over

    @property
    def channel(self) -> ringbuf.Channel:
        return self._client.channel

    def _start(self) -> None:
        if self._reaper is None:
            self._loop = asyncio.get_running_loop()
            self._reaper = threading.Thread(target=self._reap_forever, name="shmd-reaper", daemon=True)
            self._reaper.start()

    def _poll(self) -> None:
        """One look at the completion ring; reschedules itself while answers are due."""
        try:
            if self._client._cq.ready():  # while polling, only this thread reads the ring
                with self._lock:
                    got = self._client.reap()
                self._progress_ns = time.monotonic_ns()
                self._resolve(got)
        except (ShmdError, ringbuf.RingError) as err:
            self._polling = False
            self._fail_all(from_ring_error(err))
            return
        if not self._futures:
            self._polling = False
        elif time.monotonic_ns() - self._progress_ns < self.poll_ns:
            assert self._loop is not None
            self._loop.call_soon(self._poll)
        else:  # no answer for a while: let the reaper thread sleep for it
            with self._lock:
                self._polling = False
                self._reaper_active = True
            self._sleeper.set()

    def _kick(self) -> None:
        """Make sure someone watches the completion ring (event loop only)."""
        with self._lock:
            if self._polling or self._reaper_active:
                return
            self._polling = True
        self._progress_ns = time.monotonic_ns()
        assert self._loop is not None
        self._loop.call_soon(self._poll)

    def _handed_back(self, got: np.ndarray) -> None:
        self._resolve(got)
        if self._futures:
            self._kick()

    def _reap_forever(self) -> None:
        while not self._stop.is_set():
            if not self._sleeper.wait(0.1):
                continue
            try:
                self._client.wait(0.05)
                with self._lock:
                    got = self._client.reap()
                    if len(got) or not self._futures:  # an answer (or nothing left): back to the loop
                        self._reaper_active = False
                        self._sleeper.clear()
            except ShmdError as err:  # the ring is unusable: fail what waits, hand back to the loop
                with self._lock:
                    self._reaper_active = False
                    self._sleeper.clear()
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._fail_all, err)
                continue
            if len(got):
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._handed_back, got)

    def _fail_all(self, err: Exception) -> None:
        """Every waiting submission raises ``err`` (the channel cannot answer them)."""
        for slot in list(self._futures.values()):
            if not slot.batch.future.done():
                slot.batch.future.set_exception(err)
        self._futures.clear()

    def _resolve(self, got: np.ndarray) -> None:
        for resp in got:
            waiting = self._futures.pop(int(resp["request_id"]), None)
            if waiting is not None:
                waiting.answer(resp)

    @property
    def stats(self) -> dict[str, Any]:
        return self._client.stats

    async def submit_records(self, records: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Publish REQUEST records and await their RESPONSE records, in order (``timeout``: the client's)."""
        self._start()
        assert self._loop is not None
        batch = _Batch(self._loop.create_future(), len(records))
        ids = records["request_id"].tolist()
        for index, rid in enumerate(ids):
            self._futures[rid] = _Slot(batch, index)
        sent = 0
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            while sent < len(records):
                with self._lock:
                    sent += self._client.submit(records[sent:])
                self._kick()
                if sent < len(records):
                    if time.monotonic() > deadline:
                        raise NotReady(f"submission ring of {self.channel.name!r} stayed full for {timeout}s")
                    await asyncio.sleep(0.0005)  # back-pressure: let the daemon drain
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await batch.future
        except TimeoutError:
            raise NotReady(
                f"predictions unanswered after {timeout}s on channel {self.channel.name!r}: is the daemon running?"
            ) from None
        finally:
            for rid in ids:
                self._futures.pop(rid, None)
            if batch.remaining:  # not all answered: a late answer must not be kept for these ids
                with self._lock:
                    self._client.forget(ids)

    async def predict_many(
        self, model: str, items: Sequence[Mapping[str, Any]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """As ``Client.predict_many`` (breaker included; no deadline), without blocking the event loop."""
        mid = _codec.model_id(model)
        breaker = self._client._breaker
        if breaker is None:
            return await self._many(mid, items, return_exceptions)
        results = await breaker.call_many_async(
            model, items, self.channel.header, lambda: self._many(mid, items, True)
        )
        return results if return_exceptions else _records.raise_first(results)

    async def _many(self, mid: ModelId, items: Sequence[Mapping[str, Any]], return_exceptions: bool) -> list[Any]:
        with _records.gc_paused():  # not across the await: other tasks run then
            records = self._client._build(mid, items, None, False)
        responses = await self.submit_records(records)
        with _records.gc_paused():
            return _records.predictions(mid, responses, items, return_exceptions=return_exceptions)

    async def predict(
        self, model: str, fields: Mapping[str, Any], *, deadline_ms: float | None = None
    ) -> dict[str, Any]:
        """As ``Client.predict`` (edge cache, breaker), without blocking the event loop."""
        c = self._client
        mid = _codec.model_id(model)
        edge = c._edge
        key = None if edge is None else edge.key(mid, fields)
        if key is not None:
            hit = edge.get(key)  # type: ignore[union-attr]
            if hit is not None:
                return hit
            stamp = edge.stamp(mid)  # type: ignore[union-attr]
        if c._breaker is None:
            result = await self._ask(mid, fields, deadline_ms, bounded=False)
        else:
            result = await c._breaker.call_async(
                model, fields, c.channel.header, lambda: self._ask(mid, fields, deadline_ms, bounded=True)
            )
        if key is not None:
            edge.store(key, stamp, result)  # type: ignore[union-attr]
        return result

    async def _ask(
        self, mid: ModelId, fields: Mapping[str, Any], deadline_ms: float | None, bounded: bool
    ) -> dict[str, Any]:
        records = self._client._build(mid, [fields], deadline_ms, False)
        timeout = deadline_ms / 1e3 if bounded and deadline_ms is not None else None
        responses = await self.submit_records(records, timeout)
        return _records.predictions(mid, responses, [fields])[0]

    def close(self) -> None:
        self._stop.set()
        self._sleeper.set()
        if self._reaper is not None:
            self._reaper.join(timeout=1.0)
        self._client.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


__all__ = ["AsyncClient", "Client", "now_ns"]
