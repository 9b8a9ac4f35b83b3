"""One pass of the poll loop, compiled: drain and encode, then finish.

A pass is ``drain`` (compiled) -> one model call per model with rows (Python,
the only uncompiled step) -> ``finish`` (compiled, wakes sleeping clients).
The daemon calls ``step``, which is the previous pass's ``finish`` followed
by the next pass's ``drain``, so a pass costs one trip into compiled code.
With nothing to drain, ``step`` sleeps on every SQ's wake-up word itself and
drains as soon as it is woken: no Python runs between a wake-up and the drain.

``drain`` shares the pass's room fairly between channels with work, copies
their records into a private staging buffer (the copy comes before any
validation), answers bad records, deadlines and cache hits on the spot, and
encodes the rest into per-model contiguous float32 batches. It takes from a
channel only as many records as its completion ring has room for, so every
answer of the pass is sure to fit.

``finish`` post-processes the model outputs into API ranges, fills the cache,
stamps latencies into the metrics, writes each channel's answers to its CQ
with one tail store, and only then releases the SQ slots (one head store):
a daemon killed at any point in between re-answers, it never loses a request.

Channels are passed as ringbuf's ``ChannelTable`` (one table of addresses
plus private ring states) and reached only through ringbuf's ``table_*``
functions: this module never touches a ring word itself.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, RESP_CACHE_HIT, ModelId, Status
from models import encode_failure, encode_memory, encode_threat, encode_workload, postprocess
from ringbuf import (
    TIMED_OUT,
    WOKEN,
    cpu_relax,
    monotonic_ns,
    table_answer,
    table_peek,
    table_ready,
    table_release,
    table_sleep,
    table_wake,
)

from . import _cache as cache
from . import _metrics as met
from . import _metrics_compiled as met_jit
from ._errors import ConfigError

# Words of the pass_state array. The last two are a test-only fault point (see
# ``fault_state``): which step of ``finish`` to die after, and after how many times.
PASS_START, PASS_DRAIN_NS, PASS_FAULT, PASS_FAULT_COUNTDOWN = range(4)
# The adaptive idle spin (see ``_adapt_spin``): the window now, and the wake-up cost learnt.
PASS_SPIN_NS, PASS_WAKE_NS = 4, 5
PASS_STATE_WORDS = 6
INITIAL_WAKE_NS = 20_000  # a futex wake-up on this VM, measured (docs/ARCHITECTURE.md); then learnt
MIN_SPIN_NS = 2_000  # a window that grows starts here
FAULT_NONE, FAULT_AFTER_PUBLISH, FAULT_AFTER_RELEASE = range(3)
FAULT_POINTS = {"after_publish": FAULT_AFTER_PUBLISH, "after_release": FAULT_AFTER_RELEASE}
FAULT_EXIT_CODE = 86  # what a daemon killed by its fault point exits with
# Words of the loop counters array (in the stats segment, so tests and tools see them).
LOOP_SLEEPS = 0  # times the loop slept on the SQs' wake-up words
LOOP_TIMEOUT_RESCUES = 1  # sleeps that ended by timeout and then found work: a lost wake-up
LOOP_WAKES = 2  # clients woken after their answers were published
LOOP_SPIN_NS = 3  # the adaptive spin window now (ns)
LOOP_WAKE_NS = 4  # the wake-up cost learnt (ns)
N_LOOP_COUNTERS = 5
MAX_INNER_PASSES = 64  # model-free passes ``step`` may finish before returning to Python
N_MODELS = max(ModelId) + 1  # arrays indexed by model id; row 0 unused
_WORKLOAD, _THREAT, _FAILURE, _MEMORY = (int(m) for m in ModelId)
_PAYLOAD_LEN = np.array([0] + [PAYLOADS[m].itemsize for m in ModelId], np.int64)
@intrinsic
def _exit_now(typingctx, code):
    """libc ``_exit(code)``: die on the spot, like kill -9 (no handler, no cleanup)."""
    if not isinstance(code, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "_exit")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()

    return types.void(code), codegen


def fault_state(spec: str) -> tuple[int, int]:
    """``SHMD_TEST_FAULT`` (test-only) as (PASS_FAULT, PASS_FAULT_COUNTDOWN) words.

    ``after_publish:N`` / ``after_release:N``: the N-th time ``finish`` has just
    published a channel's answers / released its SQ slots, the daemon ``_exit``s
    with FAULT_EXIT_CODE. The crash-safety tests use it to kill the daemon between
    the two steps whose order makes a crash lose nothing.
    """
    if not spec:
        return FAULT_NONE, 0
    point, _, count = spec.partition(":")
    if point not in FAULT_POINTS or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"SHMD_TEST_FAULT must be after_publish:N or after_release:N (N >= 1): {spec!r}")
    return FAULT_POINTS[point], int(count)


@njit(nogil=True, cache=True, inline="always")
def _fault_point(pass_state, point):
    if pass_state[PASS_FAULT] == point:
        pass_state[PASS_FAULT_COUNTDOWN] -= 1
        if pass_state[PASS_FAULT_COUNTDOWN] == 0:
            _exit_now(FAULT_EXIT_CODE)


@njit(nogil=True, cache=True)
def _share_room(ready, alloc, start, room):
    """Water-fill ``room`` over the channels' demands, starting at ``start``."""
    n_ch = ready.shape[0]
    alloc[:] = 0
    for _ in range(n_ch):  # each round satisfies a channel or uses up the room
        active = 0
        for c in range(n_ch):
            if ready[c] > alloc[c]:
                active += 1
        if active == 0 or room == 0:
            return
        share = max(room // active, 1)
        for k in range(n_ch):
            c = (start + k) % n_ch
            give = min(ready[c] - alloc[c], share, room)
            if give > 0:
                alloc[c] += give
                room -= give


@njit(nogil=True, cache=True)
def _answer(responses, j, status, error_field, counters, c):
    responses[j].status = status
    responses[j].error_field = error_field
    counters[c, met.REJECTED + status] += 1


@njit(nogil=True, cache=True)
def drain(
    table, sq_state, cq_state, ready, alloc, offsets, pass_state, room,
    staging, reqs, p_workload, p_threat, p_failure, p_memory,
    f_workload, f_threat, f_failure, f_memory,
    counts, rows, keys, responses, versions,
    c_entries, c_ttl, c_quantum, c_stats,
    m_model, m_channel, max_queue_ns, spin_ns,
):  # fmt: skip
    """Copy, validate, encode and cache-probe up to ``room`` records; how many.

    With nothing to take, spins up to ``spin_ns`` for work before answering 0.
    ``pass_state`` is [first channel to serve, drain time ns]; a pass that
    drains anything rotates the first channel for the next one.
    """
    deadline = monotonic_ns() + spin_ns
    while table_ready(table, sq_state, cq_state, ready) == 0:
        if monotonic_ns() >= deadline:
            return 0
        cpu_relax()
    now = monotonic_ns()
    start = pass_state[PASS_START]
    _share_room(ready, alloc, start, room)
    pass_state[PASS_DRAIN_NS] = now
    counts[:] = 0
    n = 0
    for c in range(table.shape[0]):
        offsets[c] = n
        if alloc[c] == 0:
            continue
        got = table_peek(table, sq_state, c, staging[n:], alloc[c])
        if got <= 0:
            alloc[c] = 0
            continue
        alloc[c] = got
        m_channel[c, met.SUBMITTED] += got
        for j in range(n, n + got):
            _admit(
                j, c, now, reqs, p_workload, p_threat, p_failure, p_memory,
                f_workload, f_threat, f_failure, f_memory, counts, rows, keys, responses, versions,
                c_entries, c_ttl, c_quantum, c_stats, m_model, m_channel, max_queue_ns,
            )  # fmt: skip
        n += got
    offsets[table.shape[0]] = n
    if n > 0:
        pass_state[PASS_START] = (start + 1) % table.shape[0]
    return n


@njit(nogil=True, cache=True)
def _admit(
    j, c, now, reqs, p_workload, p_threat, p_failure, p_memory,
    f_workload, f_threat, f_failure, f_memory, counts, rows, keys, responses, versions,
    c_entries, c_ttl, c_quantum, c_stats, m_model, m_channel, max_queue_ns,
):  # fmt: skip
    """Decide one staged record: answered now (status, cache hit) or queued for inference."""
    req = reqs[j]
    resp = responses[j]
    resp.request_id = req.request_id
    resp.flags = 0
    resp.error_field = 0
    resp.service_ns = 0
    resp.outputs[:] = 0.0
    mid = np.int64(req.model_id)
    resp.model_id = req.model_id
    resp.model_version = versions[mid] if 0 < mid < N_MODELS else 0
    resp.status = Status.OK
    keys[j] = 0
    if req.abi_version != ABI_VERSION:
        _answer(responses, j, Status.BAD_VERSION, 0, m_channel, c)
        return
    if mid <= 0 or mid >= N_MODELS or versions[mid] == 0:
        _answer(responses, j, Status.UNKNOWN_MODEL, 0, m_channel, c)
        return
    m_model[mid, met.REQUESTS] += 1
    if req.payload_len != _PAYLOAD_LEN[mid]:
        m_model[mid, met.ERRORS] += 1
        _answer(responses, j, Status.INVALID_INPUT, 0, m_channel, c)
        return
    if req.deadline_ns != 0 and np.uint64(now) > req.deadline_ns:
        m_model[mid, met.ERRORS] += 1
        _answer(responses, j, Status.DEADLINE_EXCEEDED, 0, m_channel, c)
        return
    if max_queue_ns > 0 and req.submit_ns != 0 and np.int64(now) - np.int64(req.submit_ns) > max_queue_ns:
        m_model[mid, met.ERRORS] += 1
        _answer(responses, j, Status.OVERLOADED, 0, m_channel, c)
        return
    r = counts[mid]
    if mid == _WORKLOAD:
        feats = f_workload[r]
        err = encode_workload(p_workload, j, feats)
    elif mid == _THREAT:
        feats = f_threat[r]
        err = encode_threat(p_threat, j, feats)
    elif mid == _FAILURE:
        feats = f_failure[r]
        err = encode_failure(p_failure, j, feats)
    else:
        feats = f_memory[r]
        err = encode_memory(p_memory, j, feats)
    if err != 0:
        m_model[mid, met.ERRORS] += 1
        _answer(responses, j, Status.INVALID_INPUT, err, m_channel, c)
        return
    if c_ttl[mid] > 0 and (req.flags & REQ_NO_CACHE) == 0:
        key = cache.feature_key(feats, c_quantum[mid])
        if cache.cache_get(c_entries, c_stats, mid, key, now, resp.outputs):
            resp.flags = RESP_CACHE_HIT
            m_model[mid, met.CACHE_HITS] += 1
            return
        m_model[mid, met.CACHE_MISSES] += 1
        keys[j] = key
    rows[mid, r] = j
    counts[mid] = r + 1


@njit(nogil=True, cache=True)
def finish(
    table, sq_state, cq_state, alloc, offsets, pass_state, n,
    reqs, raw_workload, raw_threat, raw_failure, raw_memory, post,
    counts, rows, keys, responses, resp_bytes,
    c_entries, c_ttl, c_stats,
    m_model, m_hist, m_summary, m_batch, m_channel, wake,
):  # fmt: skip
    """Post-process, cache, publish every channel's answers, then release its SQ slots.

    Then wakes the clients that sleep on their CQ (after every channel is
    published, so a woken client that takes this CPU delays no other
    channel's answers). Returns how many it woke.
    """
    now = monotonic_ns()
    drain_ns = pass_state[PASS_DRAIN_NS]
    for mid in range(1, N_MODELS):
        cnt = counts[mid]
        if cnt == 0:
            continue
        if mid == _WORKLOAD:
            postprocess(mid, raw_workload[:cnt], post[:cnt])
        elif mid == _THREAT:
            postprocess(mid, raw_threat[:cnt], post[:cnt])
        elif mid == _FAILURE:
            postprocess(mid, raw_failure[:cnt], post[:cnt])
        else:
            postprocess(mid, raw_memory[:cnt], post[:cnt])
        m_model[mid, met.INFERENCES] += cnt
        m_model[mid, met.BATCHES] += 1
        met_jit.record_batch(m_batch, mid, cnt)
        for r in range(cnt):
            j = rows[mid, r]
            responses[j].outputs[:] = post[r]
            if keys[j] != 0:
                cache.cache_put(c_entries, c_stats, mid, keys[j], now, c_ttl[mid], post[r])
    publish = monotonic_ns()
    for j in range(n):
        responses[j].service_ns = publish - drain_ns
        mid = np.int64(responses[j].model_id)
        if responses[j].status == Status.OK and 0 < mid < N_MODELS:
            met_jit.record_latency(m_hist, m_summary, mid, met.SERVICE, publish - drain_ns)
            submit = np.int64(reqs[j].submit_ns)
            if 0 < submit <= publish:
                met_jit.record_latency(m_hist, m_summary, mid, met.E2E, publish - submit)
    wakes = 0
    for c in range(table.shape[0]):
        wake[c] = False
        k = alloc[c]
        if k == 0:
            continue
        first = offsets[c]
        wake[c] = table_answer(table, cq_state, c, resp_bytes[first : first + k], k)
        _fault_point(pass_state, FAULT_AFTER_PUBLISH)
        wakes += wake[c]
        m_channel[c, met.COMPLETED] += k
        # Only now may the client reuse the request slots: the answers are out.
        table_release(table, sq_state, c, k)
        _fault_point(pass_state, FAULT_AFTER_RELEASE)
    if wakes:
        for c in range(table.shape[0]):
            if wake[c]:
                table_wake(table, c)
    return wakes


@njit(nogil=True, cache=True)
def _adapt_spin(pass_state, reqs, n, idle_from, spin_max_ns, m_loop):
    """Learn from a sleep that ended with work: the idle spin window and the wake-up cost.

    Halt-polling (KVM) / hybrid polling (NVMe): spinning pays only when the next
    request comes sooner than a wake-up costs. ``idle_from`` is when the loop ran
    out of work; the request came ``waited`` later. The window grows (doubling)
    when a longer spin, within ``2 x wake cost`` and ``spin_max_ns``, would have
    caught it without sleeping, and halves when the request came later than that:
    so a caller pacing faster than a wake-up is met by a spinning loop, and a
    slower one by a sleeping loop that burns no CPU. The wake-up cost is learnt
    from the requests that woke the loop: drain time minus their submit time.
    """
    drain_ns = pass_state[PASS_DRAIN_NS]
    latest = np.int64(0)
    for j in range(n):
        latest = max(latest, np.int64(reqs[j].submit_ns))
    sample = drain_ns - latest
    arrived = drain_ns
    if 0 < sample < 1_000_000:  # a clock of another machine, or a stamp long before the submit: ignore
        pass_state[PASS_WAKE_NS] += (sample - pass_state[PASS_WAKE_NS]) // 8
        arrived = max(latest, idle_from)  # when it was published, not when the wake-up got us here
    cap = min(spin_max_ns, 2 * pass_state[PASS_WAKE_NS])
    waited = arrived - idle_from
    window = pass_state[PASS_SPIN_NS]
    if waited <= cap:
        window = min(cap, max(2 * window, MIN_SPIN_NS))
    else:
        window = window // 2 if window >= 2 * MIN_SPIN_NS else 0
    pass_state[PASS_SPIN_NS] = window
    m_loop[LOOP_SPIN_NS] = window
    m_loop[LOOP_WAKE_NS] = pass_state[PASS_WAKE_NS]


@njit(nogil=True, cache=True)
def step(
    table, sq_state, cq_state, ready, alloc, offsets, pass_state, room, n_prev,
    staging, reqs, p_workload, p_threat, p_failure, p_memory,
    f_workload, f_threat, f_failure, f_memory,
    raw_workload, raw_threat, raw_failure, raw_memory, post,
    counts, rows, keys, responses, resp_bytes, versions,
    c_entries, c_ttl, c_quantum, c_stats,
    m_model, m_hist, m_summary, m_batch, m_channel, wake, max_queue_ns, spin_ns,
    waiters, m_loop, sleep_ns,
):  # fmt: skip
    """Finish the previous pass (``n_prev`` records), then drain the next one.

    One call from Python per pass: every call costs the unboxing of each
    argument, so finishing and draining share one. With nothing to drain
    after spinning (the adaptive window, at most ``spin_ns``), sleeps on every
    SQ's wake-up word for at most ``sleep_ns`` (0: return at once; no spin
    either) and drains as soon as it is woken.
    Returns the number of records drained: 0 after a sleep that timed out or
    was interrupted by a signal (Python then runs housekeeping and handlers).
    """
    # A pass that needs no model (cache hits, refusals) is published in the
    # next round here rather than after a trip to Python; bounded, so Python
    # still sees signals and housekeeping.
    n = n_prev
    spin = min(pass_state[PASS_SPIN_NS], spin_ns) if sleep_ns > 0 else spin_ns
    idle_from = np.int64(0)
    for _ in range(MAX_INNER_PASSES):
        woke = 0
        if n > 0:
            woke = finish(
                table, sq_state, cq_state, alloc, offsets, pass_state, n,
                reqs, raw_workload, raw_threat, raw_failure, raw_memory, post,
                counts, rows, keys, responses, resp_bytes,
                c_entries, c_ttl, c_stats,
                m_model, m_hist, m_summary, m_batch, m_channel, wake,
            )  # fmt: skip
            m_loop[LOOP_WAKES] += woke
        if woke > 0:  # the woken clients need a CPU, perhaps this one: do not spin against them
            spin = 0
        started = monotonic_ns()
        n = drain(
            table, sq_state, cq_state, ready, alloc, offsets, pass_state, room,
            staging, reqs, p_workload, p_threat, p_failure, p_memory,
            f_workload, f_threat, f_failure, f_memory,
            counts, rows, keys, responses, versions,
            c_entries, c_ttl, c_quantum, c_stats,
            m_model, m_channel, max_queue_ns, spin,
        )  # fmt: skip
        if idle_from > 0 and n > 0:  # the drain after a wake-up: learn from it
            _adapt_spin(pass_state, reqs, n, idle_from, spin_ns, m_loop)
        idle_from = 0
        spin = min(pass_state[PASS_SPIN_NS], spin_ns) if sleep_ns > 0 else spin_ns
        if n == 0 and sleep_ns > 0:
            m_loop[LOOP_SLEEPS] += 1
            found, outcome = table_sleep(table, sq_state, cq_state, ready, waiters, sleep_ns)
            if found == 0 or (outcome != WOKEN and outcome != TIMED_OUT):
                return 0
            if outcome == TIMED_OUT:
                m_loop[LOOP_TIMEOUT_RESCUES] += 1
            idle_from = started
            spin = 0  # work is there: the next round drains it at once
            continue
        if n == 0 or counts.sum() > 0:
            break
    return n
