"""``python -m bench ring [--quick] [--json PATH]``: the shared-memory ring between two processes.

Figures (all between two real processes, spawned fresh):

- one-way throughput, REQUEST records/s, at batch 1, 32 and 256 (producer writes
  320-byte records into slots, consumer copies them out and releases);
- round-trip latency through a channel: request on the SQ, answer on the CQ, both
  ends compiled loops spinning (busy-poll), and the Python API with a pause between
  requests so the server really sleeps on its futex word (wake-ups);
- baselines in the same run: a raw numba acquire/release ping-pong on one shared
  cache line (the floor), multiprocessing.Pipe and posix_ipc.MessageQueue echoes.

Latency samples are the mean of each chunk of CHUNK round trips (reading the clock
per trip would cost as much as the floor itself); throughput samples are per chunk
of records. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import posix_ipc
from numba import njit

import kernel_abi as abi
from ringbuf import (
    Channel,
    Consumer,
    Producer,
    remove_leftovers,
)
from ringbuf import _core as core
from ringbuf._atomics import cpu_relax, load_acquire, monotonic_ns, store_release

from ._stats import cli, ratio, summarize, table, target, verdict

SPAWN = mp.get_context("spawn")
CHUNK = 64  # round trips per latency sample
DEADLINE_S = 30.0
TIMED_OUT = -1


# ---------------------------------------------------------------- compiled loops


@njit(nogil=True, cache=True)
def _floor_client(line, n, deadline_ns):
    """Ping: store 2i-1, spin until the server stores 2i. Chunk means in ns."""
    out = np.zeros(n // CHUNK, np.float64)
    for c in range(n // CHUNK):
        t0 = monotonic_ns()
        for k in range(CHUNK):
            i = np.uint64(c * CHUNK + k + 1)
            store_release(line, 0, np.uint64(2) * i - np.uint64(1))
            spins = 0
            while load_acquire(line, 0) != np.uint64(2) * i:
                spins += 1
                if spins & 4095 == 0 and monotonic_ns() > deadline_ns:
                    return out[:c]
        out[c] = (monotonic_ns() - t0) / CHUNK
    return out


@njit(nogil=True, cache=True)
def _floor_server(line, n, deadline_ns):
    for j in range(n // CHUNK * CHUNK):
        i = np.uint64(j + 1)
        spins = 0
        while load_acquire(line, 0) != np.uint64(2) * i - np.uint64(1):
            spins += 1
            if spins & 4095 == 0 and monotonic_ns() > deadline_ns:
                return j
        store_release(line, 0, np.uint64(2) * i)
    return n


@njit(nogil=True, cache=True)
def _send(hdr64, hdr32, slots64, state, request_id, deadline_ns):
    """Producer: one record into the next slot (only the id word is written). False on timeout."""
    capacity = slots64.shape[0]
    spins = 0
    while core.ring_space(hdr64, state, capacity) <= 0:
        spins += 1
        if spins & 4095 == 0 and monotonic_ns() > deadline_ns:
            return False
        cpu_relax()
    slots64[state[core.OWN] & np.uint64(capacity - 1), 0] = request_id
    core.ring_publish(hdr64, hdr32, state, 1)
    return True


@njit(nogil=True, cache=True)
def _receive(hdr64, slots64, state, deadline_ns):
    """Consumer: spin for one record, return its id word and release it; TIMED_OUT on timeout."""
    capacity = slots64.shape[0]
    spins = 0
    while core.ring_ready(hdr64, state, capacity) <= 0:
        spins += 1
        if spins & 4095 == 0 and monotonic_ns() > deadline_ns:
            return TIMED_OUT
        cpu_relax()
    value = slots64[state[core.OWN] & np.uint64(capacity - 1), 0]
    core.ring_release(hdr64, state, 1)
    return np.int64(value)


@njit(nogil=True, cache=True)
def _rtt_client(sq64, sq32, sq_slots, sq_state, cq64, cq_slots, cq_state, n, deadline_ns):
    out = np.zeros(n // CHUNK, np.float64)
    for c in range(n // CHUNK):
        t0 = monotonic_ns()
        for k in range(CHUNK):
            rid = c * CHUNK + k + 1
            if not _send(sq64, sq32, sq_slots, sq_state, np.uint64(rid), deadline_ns):
                return out[:c]
            if _receive(cq64, cq_slots, cq_state, deadline_ns) != rid:
                return out[:c]
        out[c] = (monotonic_ns() - t0) / CHUNK
    return out


@njit(nogil=True, cache=True)
def _rtt_server(sq64, sq_slots, sq_state, cq64, cq32, cq_slots, cq_state, n, deadline_ns):
    for j in range(n):
        rid = _receive(sq64, sq_slots, sq_state, deadline_ns)
        if rid == TIMED_OUT or not _send(cq64, cq32, cq_slots, cq_state, np.uint64(rid), deadline_ns):
            return j
    return n


@njit(nogil=True, cache=True)
def _stream_producer(hdr64, hdr32, slots, state, record, n, batch, deadline_ns):
    """Write ``n`` copies of ``record`` (sequence number in word 0) in batches of ``batch``."""
    capacity = slots.shape[0]
    mask = np.uint64(capacity - 1)
    words = slots.shape[1] // 8
    slots64 = slots.reshape(-1).view(np.uint64)
    record64 = record.view(np.uint64)
    sent = 0
    spins = 0
    while sent < n:
        space = core.ring_space(hdr64, state, capacity)
        if space < batch and space < n - sent:
            spins += 1
            if spins & 4095 == 0 and monotonic_ns() > deadline_ns:
                return sent
            cpu_relax()
            continue
        k = min(batch, n - sent)
        tail = state[core.OWN]
        for j in range(k):  # straight into the slots, by 64-bit words (a byte-wise row copy is ~4x slower)
            base = np.int64((tail + np.uint64(j)) & mask) * words
            for w in range(words):
                slots64[base + w] = record64[w]
            slots64[base] = np.uint64(sent + j)
        core.ring_publish(hdr64, hdr32, state, k)
        sent += k
    return sent


@njit(nogil=True, cache=True)
def _stream_consumer(hdr64, slots, state, out, n, chunk, deadline_ns):
    """Copy out and release ``n`` records; ns per chunk of ``chunk`` records. Checks the sequence."""
    times = np.zeros(n // chunk + 1, np.int64)
    got = 0
    t0 = monotonic_ns()
    spins = 0
    c = 0
    while got < n:
        k = core.ring_peek(hdr64, slots, state, out, out.shape[0])
        if k <= 0:
            spins += 1
            if k < 0 or (spins & 4095 == 0 and monotonic_ns() > deadline_ns):
                return times[:0], got
            cpu_relax()
            continue
        if out[k - 1, :8].view(np.uint64)[0] != np.uint64(got + k - 1):
            return times[:0], got
        core.ring_release(hdr64, state, k)
        got += k
        if got >= (c + 1) * chunk:
            t1 = monotonic_ns()
            times[c] = t1 - t0
            t0 = t1
            c += 1
    return times[:c], got


# ---------------------------------------------------------------- child processes


def _state(ring: Any, producer: bool) -> np.ndarray:
    own = ring.hdr64[core.TAIL if producer else core.HEAD]
    return core.new_state(int(own), int(ring.hdr64[core.HEAD]))


def _child(kind: str, prefix: str, n: int, arg: int = 0) -> Any:
    """Body of the server/consumer process of each measurement."""
    deadline = time.monotonic_ns() + int(DEADLINE_S * 1e9)
    if kind == "floor":
        shm = posix_ipc.SharedMemory(f"/{prefix}.line")
        import mmap

        buf = mmap.mmap(shm.fd, shm.size)
        shm.close_fd()
        return _floor_server(np.frombuffer(buf, np.uint64, 8), n, deadline)
    if kind == "mq":
        req, rep = posix_ipc.MessageQueue(f"/{prefix}.req"), posix_ipc.MessageQueue(f"/{prefix}.rep")
        for _ in range(n):
            rep.send(req.receive(5.0)[0])
        return n
    ch = Channel.attach(prefix, "bench")
    if kind == "rtt":
        sq, cq = ch.sq, ch.cq
        return _rtt_server(
            sq.hdr64, sq.slots.view(np.uint64), _state(sq, False),
            cq.hdr64, cq.hdr32, cq.slots.view(np.uint64), _state(cq, True), n, deadline,
        )
    if kind == "stream":
        out = np.zeros((max(arg, 1), ch.sq.slots.shape[1]), np.uint8)
        times, got = _stream_consumer(ch.sq.hdr64, ch.sq.slots, _state(ch.sq, False), out, n, 8192, deadline)
        return times.tolist(), got
    if kind == "wake":
        cons, prod = Consumer(ch.sq), Producer(ch.cq)
        answer = np.zeros(1, abi.RESPONSE)
        for _ in range(n):
            if cons.wait(timeout=5.0, spin_us=50) == 0:
                break
            answer["request_id"] = cons.consume(1)["request_id"]
            prod.produce(answer)
        return cons.sleeps
    raise ValueError(f"unknown benchmark child: kind={kind!r}")


def _pipe_child(conn: Any, n: int) -> None:
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


# ---------------------------------------------------------------- measurements


def _warm(prefix: str) -> None:
    """Compile (or load) every kernel in this process so children find them in numba's cache."""
    with Channel.create(prefix, "bench", sq_capacity=256, cq_capacity=256) as ch:
        sq, cq = ch.sq, ch.cq
        line = np.zeros(8, np.uint64)
        _floor_client(line, 0, 0)
        _floor_server(line, 0, 0)
        _rtt_client(sq.hdr64, sq.hdr32, sq.slots.view(np.uint64), _state(sq, True), cq.hdr64,
                    cq.slots.view(np.uint64), _state(cq, False), 0, 0)
        _rtt_server(sq.hdr64, sq.slots.view(np.uint64), _state(sq, False), cq.hdr64, cq.hdr32,
                    cq.slots.view(np.uint64), _state(cq, True), 0, 0)
        rec = np.zeros(sq.slots.shape[1], np.uint8)
        _stream_producer(sq.hdr64, sq.hdr32, sq.slots, _state(sq, True), rec, 0, 1, 0)
        _stream_consumer(sq.hdr64, sq.slots, _state(sq, False), np.zeros((1, rec.size), np.uint8), 0, 1, 0)
        ch.unlink()


def _floor(pool: ProcessPoolExecutor, prefix: str, n: int) -> list[float]:
    import mmap

    shm = posix_ipc.SharedMemory(f"/{prefix}.line", posix_ipc.O_CREX, mode=0o600, size=4096)
    buf = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    line = np.frombuffer(buf, np.uint64, 8)
    server = pool.submit(_child, "floor", prefix, n)
    samples = _floor_client(line, n, time.monotonic_ns() + int(DEADLINE_S * 1e9))
    server.result(timeout=DEADLINE_S + 5)
    posix_ipc.unlink_shared_memory(f"/{prefix}.line")
    return samples.tolist()


def _rtt_busy(pool: ProcessPoolExecutor, prefix: str, n: int) -> list[float]:
    with Channel.create(prefix, "bench", sq_capacity=256, cq_capacity=256) as ch:
        server = pool.submit(_child, "rtt", prefix, n // CHUNK * CHUNK)
        sq, cq = ch.sq, ch.cq
        samples = _rtt_client(
            sq.hdr64, sq.hdr32, sq.slots.view(np.uint64), _state(sq, True),
            cq.hdr64, cq.slots.view(np.uint64), _state(cq, False), n, time.monotonic_ns() + int(DEADLINE_S * 1e9),
        )
        server.result(timeout=DEADLINE_S + 5)
        ch.unlink()
    return samples.tolist()


def _rtt_wake(pool: ProcessPoolExecutor, prefix: str, n: int, pause_s: float) -> tuple[list[float], int]:
    """Python API both ends; the client pauses so the server's spin window expires and it sleeps."""
    with Channel.create(prefix, "bench", sq_capacity=256, cq_capacity=256) as ch:
        prod, cons = Producer(ch.sq), Consumer(ch.cq)
        server = pool.submit(_child, "wake", prefix, n)
        req = np.zeros(1, abi.REQUEST)
        samples = []
        for i in range(n):
            time.sleep(pause_s)
            req["request_id"] = i
            t0 = time.perf_counter_ns()
            prod.produce(req)
            if cons.wait(timeout=5.0, spin_us=2000) == 0:
                break
            cons.consume(1)
            samples.append(float(time.perf_counter_ns() - t0))
        sleeps = server.result(timeout=DEADLINE_S)
        del prod, cons
        ch.unlink()
    return samples, sleeps


def _stream(pool: ProcessPoolExecutor, prefix: str, n: int, batch: int) -> list[float]:
    """Records/s per chunk of 8192 records, one way, ``batch`` records per publish."""
    # 1024 slots (320 KiB) keep the working set within L2 of both cores.
    with Channel.create(prefix, "bench", sq_capacity=1024, cq_capacity=2) as ch:
        consumer = pool.submit(_child, "stream", prefix, n, batch)
        time.sleep(0.05)  # let the consumer attach before the clock starts mattering
        rec = np.zeros(ch.sq.slots.shape[1], np.uint8)
        rec[8:] = np.arange(rec.size - 8) % 251
        sent = _stream_producer(ch.sq.hdr64, ch.sq.hdr32, ch.sq.slots, _state(ch.sq, True), rec, n, batch,
                                time.monotonic_ns() + int(DEADLINE_S * 1e9))
        times, got = consumer.result(timeout=DEADLINE_S + 5)
        ch.unlink()
    if sent != n or got != n:
        raise RuntimeError(f"stream lost records: sent={sent} received={got} expected={n}")
    return [8192 / (t * 1e-9) for t in times[1:]]  # the first chunk includes the start-up


def _pipe(n: int) -> list[float]:
    a, b = SPAWN.Pipe()
    proc = SPAWN.Process(target=_pipe_child, args=(b, n))
    proc.start()
    msg = bytes(abi.REQUEST_SLOT_SIZE)
    a.send_bytes(msg)
    a.recv_bytes()  # the child is up
    samples = []
    for _ in range(n - 1):
        t0 = time.perf_counter_ns()
        a.send_bytes(msg)
        a.recv_bytes()
        samples.append(float(time.perf_counter_ns() - t0))
    proc.join(10)
    return samples


def _mq(pool: ProcessPoolExecutor, prefix: str, n: int) -> list[float]:
    req = posix_ipc.MessageQueue(f"/{prefix}.req", posix_ipc.O_CREX, mode=0o600)
    rep = posix_ipc.MessageQueue(f"/{prefix}.rep", posix_ipc.O_CREX, mode=0o600)
    server = pool.submit(_child, "mq", prefix, n)
    msg = bytes(abi.REQUEST_SLOT_SIZE)
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        req.send(msg)
        rep.receive(5.0)
        if i:  # the first includes the child's start-up
            samples.append(float(time.perf_counter_ns() - t0))
    server.result(timeout=10)
    for q in (req, rep):
        q.unlink()
        q.close()
    return samples


# ---------------------------------------------------------------- main


def run(quick: bool) -> dict[str, Any]:
    prefix = f"bench{os.getpid()}x{secrets.token_hex(3)}"
    scale = 1 if quick else 4
    figures: dict[str, Any] = {}
    baselines: dict[str, Any] = {}
    try:
        _warm(prefix)
        with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
            pool.submit(_child, "floor", prefix, 0).exception()  # start the worker (imports) untimed
            baselines["floor_rtt_ns"] = summarize(_floor(pool, prefix, 50_000 * scale))
            figures["rtt_busy_ns"] = summarize(_rtt_busy(pool, prefix, 50_000 * scale))
            for batch, n in ((1, 500_000), (32, 2_000_000), (256, 4_000_000)):
                figures[f"oneway_batch{batch}_rps"] = summarize(_stream(pool, prefix, n * scale // 2 + n // 2, batch))
            samples, sleeps = _rtt_wake(pool, prefix, 300 * scale, 0.002)
            figures["rtt_wake_ns"] = {**summarize(samples), "server_sleeps": sleeps}
            baselines["mq_rtt_ns"] = summarize(_mq(pool, prefix, 2000 * scale))
        baselines["pipe_rtt_ns"] = summarize(_pipe(2000 * scale))
    finally:
        remove_leftovers(prefix)
    floor = baselines["floor_rtt_ns"]["median"]
    ratios = {
        "rtt_busy_over_floor": ratio(figures["rtt_busy_ns"]["median"], floor),
        "rtt_wake_over_floor": ratio(figures["rtt_wake_ns"]["median"], floor),
        "pipe_over_floor": ratio(baselines["pipe_rtt_ns"]["median"], floor),
        "mq_over_floor": ratio(baselines["mq_rtt_ns"]["median"], floor),
        "pipe_over_rtt_busy": ratio(baselines["pipe_rtt_ns"]["median"], figures["rtt_busy_ns"]["median"]),
    }
    targets = {
        "rtt_busy_within_3x_floor": target(ratios["rtt_busy_over_floor"], "<=", 3.0),
        "oneway_batch256_at_least_10M_rps": target(figures["oneway_batch256_rps"]["median"], ">=", 10e6),
    }
    return {"benchmark": "ring", "quick": quick, "figures": figures, "baselines": baselines,
            "ratios": ratios, "targets": targets}


def report(result: dict[str, Any]) -> str:
    f, b, r = result["figures"], result["baselines"], result["ratios"]
    floor = b["floor_rtt_ns"]["median"]
    rows = [
        ("floor: numba ping-pong, one line", b["floor_rtt_ns"], "ns RTT", 1.0),
        ("channel RTT, busy-poll (SQ->CQ)", f["rtt_busy_ns"], "ns RTT", r["rtt_busy_over_floor"]),
        ("channel RTT, wake-ups (Python API)", f["rtt_wake_ns"], "ns RTT", r["rtt_wake_over_floor"]),
        ("multiprocessing.Pipe echo", b["pipe_rtt_ns"], "ns RTT", r["pipe_over_floor"]),
        ("posix_ipc.MessageQueue echo", b["mq_rtt_ns"], "ns RTT", r["mq_over_floor"]),
    ]
    lat = table(
        ["round trip", "median", "p99", "n", "x floor"],
        [(name, s["median"], s["p99"], s["n"], x) for name, s, _, x in rows],
    )
    thr = table(
        ["one-way, REQUEST records (320 B)", "median rec/s", "p1 rec/s (slow tail)", "chunks"],
        [(f"batch {k}", f[f"oneway_batch{k}_rps"]["median"], f[f"oneway_batch{k}_rps"]["p1"],
          f[f"oneway_batch{k}_rps"]["n"]) for k in (1, 32, 256)],
    )
    t = result["targets"]
    lines = [
        f"ring benchmark ({'quick' if result['quick'] else 'full'}); latency samples are means of {CHUNK} trips"
        " for the compiled loops, single trips otherwise",
        lat,
        "",
        thr,
        "",
        f"target busy-poll RTT <= 3x floor ({floor:.0f} ns): {r['rtt_busy_over_floor']:.2f}x "
        f"{verdict(t['rtt_busy_within_3x_floor'])}",
        f"target >= 10M rec/s at batch 256: {f['oneway_batch256_rps']['median'] / 1e6:.1f}M "
        f"{verdict(t['oneway_batch256_at_least_10M_rps'])}",
        f"server slept {f['rtt_wake_ns']['server_sleeps']} times in {f['rtt_wake_ns']['n']} wake-up round trips",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench ring", __doc__.splitlines()[0], run, report, "fewer samples, < 20 s")
