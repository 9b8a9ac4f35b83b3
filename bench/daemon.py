"""``python -m bench daemon``: a real ``shmd serve`` measured from client processes.

Figures (median, p99, p99.9, max) and their same-run baselines:
- single-request round trip, cache miss and cache hit, from a compiled client
  loop (so the client's own Python costs are not what is measured), beside the
  raw shared-memory ping-pong floor (bench.ring) and the model's raw batch-1
  call time measured in this process; every trip counts, including those
  that had to wake the daemon (also reported on their own);
- sustained predictions/s with batches of 256 from one and from four client
  processes;
- latency under open-loop offered load (10k, 100k, 1M requests/s): each
  request's latency counts from its *intended* send time, so a stalled client
  cannot hide queueing (no coordinated omission);
- the cache's cost and benefit: two fresh daemons configured alike but for
  the cache, measured alternately;
- time from ``shmd serve`` to the first answered prediction, resident memory,
  idle CPU.

Each target is recorded in the results as met or missed (``targets``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

import ringbuf
from bench._stats import cli, ratio, summarize, table, target, verdict
from kernel_abi import ABI_VERSION, PAYLOAD_OFFSET, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, RESPONSE, ModelId
from ringbuf import _core as core
from ringbuf import spin_pause

MODEL = ModelId.WORKLOAD
# Byte offsets inside a request slot that the compiled loops rewrite per request.
_ID = REQUEST.fields["request_id"][1]
_SUBMIT = REQUEST.fields["submit_ns"][1]
_CPU = PAYLOAD_OFFSET + PAYLOADS[MODEL].fields["current_cpu"][1]


# --- compiled client loops --------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _put(row, offset, value, width):
    """Store ``value`` little-endian in ``width`` bytes of a uint8 row."""
    for b in range(width):
        row[offset + b] = (value >> np.uint64(8 * b)) & np.uint64(0xFF)


@njit(nogil=True, cache=True, inline="always")
def _get_u64(row, offset):
    value = np.uint64(0)
    for b in range(8):
        value |= np.uint64(row[offset + b]) << np.uint64(8 * b)
    return value




@njit(nogil=True, cache=True)
def _await_answer(cq64, cq_slots, cq_state, resp, deadline_ns):
    """Spin until one completion is ready and consume it; False past ``deadline_ns``.

    Spins as the clients do (``ringbuf.spin_pause``: pause, then yield the CPU between
    looks): a daemon this process woke is put on this CPU and, behind a plain busy loop,
    waited for the loop to be preempted (median 51 µs of the trips that woke it).
    """
    start = core.monotonic_ns()
    while core.ring_peek(cq64, cq_slots, cq_state, resp, 1) == 0:
        now = core.monotonic_ns()
        if now > deadline_ns:
            return False
        spin_pause(now - start)
    core.ring_release(cq64, cq_state, 1)
    return True


@njit(nogil=True, cache=True)
def _ping(sq64, sq32, sq_slots, sq_state, cq64, cq_slots, cq_state, template, n, out, deadline_ns, started):
    """``n`` sequential round trips; per-trip ns in ``out``.

    Returns ``(done, woke)``. With ``woke`` the publish of trip ``done`` had to
    wake the sleeping daemon; the trip is in flight (its start time is in
    ``started[0]``) and the caller times it to the end with ``_finish_trip``,
    so no trip is left out of the sample.
    """
    rec = template.copy().reshape(1, -1)
    resp = np.empty((1, cq_slots.shape[1]), np.uint8)
    for i in range(n):
        _put(rec[0], _ID, np.uint64(i + 1), 8)
        t0 = core.monotonic_ns()
        _put(rec[0], _SUBMIT, np.uint64(t0), 8)
        accepted, wake = core.ring_produce(sq64, sq32, sq_slots, sq_state, rec, 1)
        if accepted != 1:
            return i, False
        if wake:
            started[0] = t0
            return i, True
        if not _await_answer(cq64, cq_slots, cq_state, resp, deadline_ns):
            return i, False
        out[i] = core.monotonic_ns() - t0
    return n, False


@njit(nogil=True, cache=True)
def _finish_trip(cq64, cq_slots, cq_state, started, deadline_ns):
    """The round trip begun at ``started[0]``, in ns, once its answer is consumed; -1 past the deadline."""
    resp = np.empty((1, cq_slots.shape[1]), np.uint8)
    if not _await_answer(cq64, cq_slots, cq_state, resp, deadline_ns):
        return -1
    return core.monotonic_ns() - started[0]


FIXED, DISTINCT, TYPICAL = 0, 1, 2  # how _stream varies the features of each request
_VALUE_BITS = (np.arange(65536, dtype=np.float32) / 65536).view(np.uint32).astype(np.uint64)
_HIST0 = PAYLOAD_OFFSET + PAYLOADS[MODEL].fields["historical_cpu"][1]
_FLAGS = RESPONSE.fields["flags"][1]


@njit(nogil=True, cache=True)
def _vary(row, request_id, mode, agents, epoch):
    if mode == DISTINCT:  # two features from the id: unique for 2**32 requests, so never a hit
        _put(row, _CPU, _VALUE_BITS[request_id & 0xFFFF], 4)
        _put(row, _HIST0, _VALUE_BITS[(request_id >> 16) & 0xFFFF], 4)
    elif mode == TYPICAL:  # agent's own features, changing once per epoch
        agent = request_id % agents
        _put(row, _HIST0, _VALUE_BITS[agent & 0xFFFF], 4)
        _put(row, _CPU, _VALUE_BITS[(agent * 7919 + epoch * 104729) & 0xFFFF], 4)


@njit(nogil=True, cache=True)
def _stream(sq64, sq32, sq_slots, sq_state, cq64, cq32, cq_slots, cq_state, batch_rows, run_ns, resp, mode, agents,
            change_ns, counts):  # fmt: skip
    """Keep the SQ fed with batches for ``run_ns``; ``counts`` += [answers, cache hits].

    With the SQ full and no answer in, it sleeps on the CQ until the daemon publishes
    (``ring_wait`` without a spin), as a client waiting for a batch should: hundreds of
    answers are hundreds of µs away. It used to poll the CQ without a pause, so four
    such clients on two CPUs took the CPU the daemon needed to answer them (4 clients:
    0.10 M/s in total beside 0.67 M/s sleeping, same run, issue 11).

    Returns True when it stopped early because the daemon sleeps (post, call again).
    """
    start = core.monotonic_ns()
    next_id = counts[2] + 1
    while core.monotonic_ns() - start < run_ns:
        k = batch_rows.shape[0]
        epoch = (core.monotonic_ns() - start) // change_ns
        for j in range(k):
            _put(batch_rows[j], _ID, np.uint64(next_id + j), 8)
            _vary(batch_rows[j], next_id + j, mode, agents, epoch)
        accepted, wake = core.ring_produce(sq64, sq32, sq_slots, sq_state, batch_rows, k)
        if accepted > 0:
            next_id += accepted
            counts[2] = next_id - 1
        if wake:
            return True
        got = core.ring_peek(cq64, cq_slots, cq_state, resp, resp.shape[0])
        if got == 0 and accepted < k:  # the SQ is full and no answer is in: sleep until some are published
            remaining = run_ns - (core.monotonic_ns() - start)
            if core.ring_wait(cq64, cq32, cq_state, cq_slots.shape[0], 0, max(remaining, 0)) < 0:
                return False
            got = core.ring_peek(cq64, cq_slots, cq_state, resp, resp.shape[0])
        if got > 0:
            for j in range(got):
                counts[1] += resp[j, _FLAGS] & 1
            core.ring_release(cq64, cq_state, got)
            counts[0] += got
    return False


@njit(nogil=True, cache=True)
def _open_loop(
    sq64, sq32, sq_slots, sq_state, cq64, cq_slots, cq_state, template, rate, progress, lat, resp, deadline_ns
):
    """Offer ``len(lat)`` requests at ``rate``/s on a fixed schedule; latency from intended send time.

    ``progress`` = [schedule start ns, sent, answered] survives a return for a
    wake-up (returns True then), so the caller can post and call again.
    """
    n = lat.shape[0]
    interval = 1e9 / rate
    if progress[0] == 0:
        progress[0] = core.monotonic_ns()
    t0 = progress[0]
    staged = np.empty((256, template.shape[0]), np.uint8)
    for j in range(256):
        staged[j, :] = template
    while progress[2] < n:
        now = core.monotonic_ns()
        if now > deadline_ns:
            return False
        due = min(n, np.int64((now - t0) / interval) + 1) - progress[1]
        if due > 0:
            k = min(due, 256)
            for j in range(k):
                _put(staged[j], _ID, np.uint64(progress[1] + j + 1), 8)
            accepted, wake = core.ring_produce(sq64, sq32, sq_slots, sq_state, staged[:k], k)
            if accepted > 0:
                progress[1] += accepted
            if wake:
                return True
        m = core.ring_peek(cq64, cq_slots, cq_state, resp, resp.shape[0])
        if m > 0:
            now = core.monotonic_ns()
            for j in range(m):
                rid = np.int64(_get_u64(resp[j], 0))
                if 1 <= rid <= n:  # not an answer left on the channel by its previous holder
                    lat[rid - 1] = now - (t0 + np.int64((rid - 1) * interval))
                    progress[2] += 1
            core.ring_release(cq64, cq_state, m)
    return False


# --- client process helpers ---------------------------------------------------------


class _Attached:
    """A channel attached from a bench process, with the compiled-loop arguments."""

    def __init__(self, prefix: str, channel: str) -> None:
        from shmd.client import Client

        self.client = Client(channel, prefix)
        ch = self.client.channel
        self.sq_state = core.new_state(int(ch.sq.hdr64[core.TAIL]), int(ch.sq.hdr64[core.HEAD]))
        time.sleep(0.05)  # let answers to the channel's previous holder land, then skip them
        tail = int(ch.cq.hdr64[core.TAIL])
        ch.cq.hdr64[core.HEAD] = tail
        self.cq_state = core.new_state(tail, tail)
        self.args = (ch.sq.hdr64, ch.sq.hdr32, ch.sq.slots, self.sq_state, ch.cq.hdr64, ch.cq.slots, self.cq_state)
        self.stream_args = (*self.args[:5], ch.cq.hdr32, ch.cq.slots, self.cq_state)

    def close(self) -> None:
        self.client.close()


def _template(no_cache: bool) -> np.ndarray:
    from shmd._codec import encode_payload
    from shmd.samples import WORKLOAD

    rec = np.zeros(1, REQUESTS[MODEL])
    rec["payload"] = encode_payload(MODEL, WORKLOAD)
    rec["model_id"] = MODEL
    rec["abi_version"] = ABI_VERSION
    rec["payload_len"] = PAYLOADS[MODEL].itemsize
    rec["flags"] = REQ_NO_CACHE if no_cache else 0
    return rec.view(REQUEST).view(np.uint8).reshape(-1).copy()


def _rtt_child(prefix: str, channel: str, n: int, miss: bool) -> dict[str, list[float]]:
    """``n`` round trips in µs, every one of them; ``woken``: those whose publish woke the daemon."""
    a = _Attached(prefix, channel)
    try:
        template = _template(no_cache=miss)  # a miss is an inference: the request bypasses the cache
        out = np.zeros(n, np.int64)
        woken = []
        started = np.zeros(1, np.int64)
        # Load _finish_trip now (a past deadline: it returns at once): its first call loads it from
        # numba's cache, 230-480 ms here, which the first trip that woke the daemon used to pay.
        _finish_trip(a.args[4], a.args[5], a.args[6], started, 0)
        done = 0
        deadline = time.monotonic_ns() + 60_000_000_000
        while done < n and time.monotonic_ns() < deadline:
            k, wake = _ping(*a.args, template, n - done, out[done:], deadline, started)
            done += k
            if wake:  # counted like any other trip, and also reported on its own
                out[done] = _finish_trip(a.args[4], a.args[5], a.args[6], started, deadline)
                if out[done] < 0:
                    raise RuntimeError("daemon did not answer after a wake-up")
                woken.append(done)
                done += 1
        us = out[:done] / 1000.0
        return {"all": us.tolist(), "woken": us[woken].tolist()}
    finally:
        a.close()


def _stream_child(
    prefix: str, channel: str, seconds: float, batch: int, mode: int = FIXED, agents: int = 1000,
    change_ms: float = 10.0,
) -> tuple[int, int, float]:
    """Closed-loop batches for ``seconds``: (answers, cache hits, seconds taken)."""
    a = _Attached(prefix, channel)
    try:
        rows = np.repeat(_template(no_cache=mode == FIXED)[None, :], batch, axis=0)
        if mode == FIXED:  # distinct rows, cache bypassed: every prediction is inferred
            vals = (np.arange(batch, dtype=np.float32) / batch).view(np.uint8).reshape(batch, 4)
            rows[:, _CPU : _CPU + 4] = vals
        resp = np.zeros((a.client.channel.cq.capacity, 64), np.uint8)
        counts = np.zeros(3, np.int64)  # answers, hits, last id
        # Load _stream before the clock starts (no time to run: it returns at once); its first
        # call loads or compiles it, which took the whole window of a quick run on a busy host.
        _stream(*a.stream_args, rows, 0, resp, mode, agents, int(change_ms * 1e6), counts)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            remaining = int((seconds - (time.monotonic() - t0)) * 1e9)
            _stream(*a.stream_args, rows, max(remaining, 0), resp, mode, agents, int(change_ms * 1e6), counts)
        return int(counts[0]), int(counts[1]), time.monotonic() - t0
    finally:
        a.close()


def _open_loop_child(prefix: str, channel: str, rate: float, n: int) -> list[float]:
    a = _Attached(prefix, channel)
    try:
        template = _template(no_cache=True)
        lat = np.full(n, -1, np.int64)
        resp = np.zeros((a.client.channel.cq.capacity, 64), np.uint8)
        deadline = time.monotonic_ns() + int((n / rate + 20) * 1e9)
        progress = np.zeros(3, np.int64)
        while _open_loop(*a.args, template, rate, progress, lat, resp, deadline):
            pass  # the publish already woke the daemon; carry on
        return (lat[lat >= 0] / 1000.0).tolist()
    finally:
        a.close()


# --- the daemon under test ------------------------------------------------------------


def wait_ready(proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    """Block until daemon ``proc`` has logged ``event=ready`` into ``log`` (its stderr).

    Clients start only then: before it the daemon may still be loading (or compiling, 20-50 s
    on a cold numba cache under load) the loop's code. Raises with the log's tail if the daemon
    exits or is not ready within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while b"event=ready " not in (text := log.read_bytes()):
        if proc.poll() is not None or time.monotonic() > deadline:
            code = proc.returncode
            why = f"exited with code {code}" if code is not None else f"was not ready within {timeout_s:.0f} s"
            raise RuntimeError(f"daemon {why}; its log ({log}):\n{text.decode(errors='replace')[-4000:]}")
        time.sleep(0.005)


def _start_daemon(prefix: str, channels: str, *extra: str, log: Path | None = None) -> tuple[subprocess.Popen, float]:
    """Start ``shmd serve`` and wait for ``event=ready``; seconds from start until a first prediction was answered.

    Its stderr goes to ``log`` (default: a temporary file). The daemon is
    killed if it is not ready within 300 s, does not answer, or anything else goes wrong
    here (never left running behind a failed bench).
    """
    from shmd.client import Client
    from shmd.samples import WORKLOAD

    t0 = time.monotonic()
    argv = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--no-http", "--channels", channels, *extra]
    # The temporary log is removed on leaving; the daemon keeps writing to the file it has open.
    with open(log, "wb") if log is not None else tempfile.NamedTemporaryFile(prefix=f"{prefix}.") as stderr:
        proc = subprocess.Popen(argv, stderr=stderr)
        try:
            wait_ready(proc, Path(stderr.name))
            with Client(channels.split(",")[0], prefix, timeout=30) as c:
                c.predict("workload", WORKLOAD)
            return proc, time.monotonic() - t0
        except BaseException:
            proc.kill()
            proc.wait(30)
            ringbuf.remove_leftovers(prefix)
            raise


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _model_call_us(n: int) -> list[float]:
    import models

    runner = models.load_runner(MODEL)
    x = np.random.default_rng(0).random((1, models.N_FEATURES[MODEL]), np.float32)
    for _ in range(100):
        runner.predict(x)
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        runner.predict(x)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def _numpy_forward_us(n: int) -> list[float]:
    """The same model as numpy matrix products (bench.models' baseline), batch 1."""
    import models
    from bench.models import _numpy_forward

    fn = _numpy_forward(MODEL)
    x = np.random.default_rng(0).random((1, models.N_FEATURES[MODEL]), np.float32)
    for _ in range(20):
        fn(x)
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn(x)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def _cache_figures(
    pool: ProcessPoolExecutor, prefix: str, channels: str, seconds: float, adaptive: bool = False
) -> dict[str, Any]:
    """Throughput with the cache on and off, at 0% and typical hits, on two identical fresh daemons.

    With ``adaptive``, a third daemon has the cache on with the adaptive TTL
    (``bench ttl``): its cost at 0% hits is ``zero_hit_cost_adaptive``.
    The daemons differ only in their config file's ``enabled``/``adaptive``; all are
    started the same way with the same channels, and the runs alternate
    (on, off, on, off, after a warm-up round of each) so a drift of the shared machine hits both alike.
    Typical: 1,000 agents asked in turn as fast as the daemon answers (about
    every millisecond each at ~1M/s) while each agent's telemetry changes
    every 10 ms; workload's TTL is 100 ms.
    """
    runs: dict[str, list[float]] = {}
    daemons = {}
    try:
        variants = [("on", "true"), ("off", "false")] + ([("adaptive", "true\nadaptive = true")] if adaptive else [])
        for label, enabled in variants:
            pfx = f"{prefix}{label}"
            config = f"/tmp/{pfx}.toml"
            with open(config, "w") as f:
                f.write("".join(f"[cache.{m.name.lower()}]\nenabled = {enabled}\n" for m in ModelId))
            daemons[label] = (pfx, config, _start_daemon(pfx, channels, "--config", config)[0])
        # Round 0 warms up and is not counted: in one run the very first streams (fresh pool process,
        # fresh daemon) went at 65k/s against ~800k/s later, and made the cache look 46% dear.
        for round_ in range(3):
            for label, (pfx, _, _) in daemons.items():
                for mode, name in ((DISTINCT, "zero_hit"), (TYPICAL, "typical")):
                    done, hits, secs = pool.submit(_stream_child, pfx, "c0", seconds, 256, mode).result()
                    if round_ == 0:
                        continue
                    runs.setdefault(f"{name}_per_s_cache_{label}", []).append(done / secs)
                    runs.setdefault(f"{name}_hit_rate_cache_{label}", []).append(hits / max(done, 1))
    finally:
        for pfx, config, proc in daemons.values():
            proc.terminate()
            proc.wait(30)
            ringbuf.remove_leftovers(pfx)
            os.unlink(config)
    out: dict[str, Any] = {k: float(np.mean(v)) for k, v in runs.items()}
    out["runs"] = runs
    out["zero_hit_cost"] = 1 - ratio(out["zero_hit_per_s_cache_on"], out["zero_hit_per_s_cache_off"])
    out["typical_speedup"] = ratio(out["typical_per_s_cache_on"], out["typical_per_s_cache_off"])
    if adaptive:
        out["zero_hit_cost_adaptive"] = 1 - ratio(out["zero_hit_per_s_cache_adaptive"], out["zero_hit_per_s_cache_off"])
    return out


def _backend_figures(pool: ProcessPoolExecutor, prefix: str, seconds: float, n_rtt: int) -> dict[str, Any]:
    """Per model backend, cache off: round trip of a miss and batch-256 throughput, 1 and 4 clients.

    Each backend gets a daemon of its own (``--backend``), measured one after the other.
    """
    config = f"/tmp/{prefix}b.toml"
    with open(config, "w") as f:
        f.write("".join(f"[cache.{m.name.lower()}]\nenabled = false\n" for m in ModelId))
    out: dict[str, Any] = {}
    try:
        for backend in ("litert", "compiled"):
            pfx = f"{prefix}{backend[0]}"
            proc, _ = _start_daemon(pfx, "c0,c1,c2,c3", "--config", config, "--backend", backend)
            try:
                rtt = pool.submit(_rtt_child, pfx, "c0", n_rtt, True).result()
                fig: dict[str, Any] = {"rtt_miss_us": summarize(rtt["all"])}
                total, _, secs = pool.submit(_stream_child, pfx, "c0", seconds, 256).result()
                fig["throughput_1_client_per_s"] = total / secs
                parts = [f.result() for f in [pool.submit(_stream_child, pfx, f"c{i}", seconds, 256) for i in range(4)]]
                fig["throughput_4_clients_per_s"] = sum(p[0] for p in parts) / max(p[2] for p in parts)
                out[backend] = fig
            finally:
                proc.terminate()
                proc.wait(30)
                ringbuf.remove_leftovers(pfx)
    finally:
        os.unlink(config)
    return out


def run(quick: bool) -> dict[str, Any]:
    from bench.ring import _floor

    n_rtt = 2_000 if quick else 20_000
    seconds = 1.5 if quick else 4.0
    rates = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    prefix = f"bd{os.getpid()}x{secrets.token_hex(3)}"
    channels = "c0,c1,c2,c3"
    proc, cold_s = _start_daemon(prefix, channels)
    result: dict[str, Any] = {"quick": quick, "figures": {}, "baselines": {}, "ratios": {}}
    fig, base = result["figures"], result["baselines"]
    try:
        with ProcessPoolExecutor(4) as pool:
            fig["cold_start_s"] = cold_s
            fig["rss_mb"] = _rss_mb(proc.pid)
            before = _cpu_s(proc.pid)
            time.sleep(2.0)
            fig["idle_cpu_fraction"] = (_cpu_s(proc.pid) - before) / 2.0
            for kind, miss in (("miss", True), ("hit", False)):
                trips = pool.submit(_rtt_child, prefix, "c0", n_rtt, miss).result()
                fig[f"rtt_{kind}_us"] = summarize(trips["all"])  # every trip, woken ones included
                fig[f"rtt_{kind}_woken_us"] = summarize(trips["woken"])  # those whose publish woke the daemon
            total, _, secs = pool.submit(_stream_child, prefix, "c0", seconds, 256).result()
            fig["throughput_1_client_per_s"] = total / secs
            futs = [pool.submit(_stream_child, prefix, f"c{i}", seconds, 256) for i in range(4)]
            parts = [f.result() for f in futs]
            fig["throughput_4_clients_per_s"] = sum(p[0] for p in parts) / max(p[2] for p in parts)
            fig["cache"] = _cache_figures(pool, prefix + "k", channels, seconds)
            fig["backends"] = _backend_figures(pool, prefix, seconds, n_rtt)
            for rate in rates:
                n = int(min(rate * (0.5 if quick else 1.0), 400_000))
                lat = pool.submit(_open_loop_child, prefix, "c1", float(rate), n).result()
                fig[f"open_loop_{rate}_per_s_us"] = summarize(lat)
            fig["rss_mb_after_load"] = _rss_mb(proc.pid)
        floor_prefix = prefix + "f"
        with ProcessPoolExecutor(2) as pool:
            floor_ns = _floor(pool, floor_prefix, 200_000 if not quick else 50_000)  # chunk means, ns
            base["floor_rtt_us"] = summarize(np.asarray(floor_ns) / 1000.0)
        ringbuf.remove_leftovers(floor_prefix)
        base["model_batch1_call_us"] = summarize(_model_call_us(2_000 if quick else 10_000))
        base["numpy_forward_batch1_us"] = summarize(_numpy_forward_us(500 if quick else 2_000))  # imports keras: last
    finally:
        proc.terminate()
        proc.wait(30)
        ringbuf.remove_leftovers(prefix)
    floor = base["floor_rtt_us"]["median"]
    model = base["model_batch1_call_us"]["median"]
    result["ratios"] = {
        "rtt_miss_over_floor": ratio(fig["rtt_miss_us"]["median"], floor),
        "rtt_hit_over_floor": ratio(fig["rtt_hit_us"]["median"], floor),
        "rtt_miss_over_model_call": ratio(fig["rtt_miss_us"]["median"], model),
        "rtt_hit_over_model_call": ratio(fig["rtt_hit_us"]["median"], model),
    }
    cache = fig["cache"]
    result["targets"] = {
        # Issue 11's targets (the compiled loop's; the seed's looser 5 / 25 µs and 2 M from 4 clients came first).
        "rtt_miss_p50_us": target(fig["rtt_miss_us"]["median"], "<=", 4),
        "rtt_miss_p99_us": target(fig["rtt_miss_us"]["p99"], "<=", 20),
        "throughput_1_client_per_s": target(fig["throughput_1_client_per_s"], ">=", 2e6),
        "throughput_4_clients_per_s": target(fig["throughput_4_clients_per_s"], ">=", 1.5e6),
        "cold_start_s": target(fig["cold_start_s"], "<=", 1),
        "rss_mb_after_load": target(fig["rss_mb_after_load"], "<=", 250),
        "idle_cpu_fraction": target(fig["idle_cpu_fraction"], "<", 0.01),
        "cache_cost_at_zero_hits": target(cache["zero_hit_cost"], "<", 0.10),
        "typical_hit_rate": target(cache["typical_hit_rate_cache_on"], ">", 0.80),
    }
    return result


def report(r: dict[str, Any]) -> str:
    f, b, q, t = r["figures"], r["baselines"], r["ratios"], r["targets"]

    def row(name: str, s: dict[str, float], goal: str = "") -> list[Any]:
        return [name, s["median"], s["p99"], s["p999"], s["max"], s["n"], goal]

    def one(name: str, value: float, key: str = "") -> list[Any]:
        return [name, value, "", "", "", "", verdict(t[key]) if key else ""]

    rows: list[list[Any]] = [
        row("round trip, cache miss (µs)", f["rtt_miss_us"],
            f"p50 {verdict(t['rtt_miss_p50_us'])}, p99 {verdict(t['rtt_miss_p99_us'])}"),
        row("  of which woke the daemon (µs)", f["rtt_miss_woken_us"]),
        row("round trip, cache hit (µs)", f["rtt_hit_us"]),
        row("  of which woke the daemon (µs)", f["rtt_hit_woken_us"]),
        row("baseline: raw ping-pong floor (µs)", b["floor_rtt_us"]),
        row("baseline: model batch-1 call, LiteRT (µs)", b["model_batch1_call_us"]),
        row("baseline: model batch-1 forward, numpy (µs)", b["numpy_forward_batch1_us"]),
    ]  # fmt: skip
    for key, value in f.items():
        if key.startswith("open_loop_"):
            rows.append(row(f"open loop {key.split('_')[2]}/s latency (µs)", value))
    cache = f["cache"]
    rows += [
        one("predictions/s, 1 client, batch 256", f["throughput_1_client_per_s"], "throughput_1_client_per_s"),
        one("predictions/s, 4 clients, batch 256", f["throughput_4_clients_per_s"], "throughput_4_clients_per_s"),
        one("cold start to first answer (s)", f["cold_start_s"], "cold_start_s"),
        one("daemon RSS (MB), after load", f["rss_mb_after_load"], "rss_mb_after_load"),
        one("idle CPU (fraction of a core)", f["idle_cpu_fraction"], "idle_cpu_fraction"),
        one("cache on, 0% hits (pred/s)", cache["zero_hit_per_s_cache_on"]),
        one("cache off, same load and daemon config (pred/s)", cache["zero_hit_per_s_cache_off"]),
        one("cache cost at 0% hits (fraction)", cache["zero_hit_cost"], "cache_cost_at_zero_hits"),
        one("typical: hit rate", cache["typical_hit_rate_cache_on"], "typical_hit_rate"),
        one("typical: pred/s cache on", cache["typical_per_s_cache_on"]),
        one("typical: pred/s cache off", cache["typical_per_s_cache_off"]),
        one("typical: speed-up from the cache", cache["typical_speedup"]),
    ]
    for backend, bf in f.get("backends", {}).items():  # every row has the table's 7 columns
        rows += [
            row(f"{backend}, cache off: miss round trip (µs)", bf["rtt_miss_us"], "p50<=4, p99<=20"),
            [f"{backend}, cache off: pred/s 1 client", bf["throughput_1_client_per_s"], "", "", "", "", ">= 2M"],
            [f"{backend}, cache off: pred/s 4 clients", bf["throughput_4_clients_per_s"], "", "", "", "", ">= 1.5M"],
        ]  # fmt: skip
    ratios = "\n".join(f"{k}: {v:.2f}" for k, v in q.items())
    return table(["figure", "median", "p99", "p99.9", "max", "n", "target"], rows) + "\n\nratios\n" + ratios


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench daemon", __doc__.splitlines()[0], run, report, "fewer samples (< 1 minute)")


__all__ = ["main"]
