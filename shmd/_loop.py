"""One pass of the poll loop, compiled: drain and encode, then finish.

A pass is ``drain`` (compiled) -> one model call per model with rows ->
``finish`` (compiled, wakes sleeping clients). Models the ``Models`` bank holds
(``--backend compiled``) run inside ``step`` (``models.forward``): such a pass
never returns to Python. Others (``litert``, ``tf``) are called from Python
between two ``step`` calls; ``step`` is the previous pass's ``finish`` followed
by the next pass's ``drain``, so a pass costs one trip into compiled code.
With nothing to drain, ``step`` sleeps on every SQ's wake-up word itself and
drains as soon as it is woken: no Python runs between a wake-up and the drain.

``drain`` shares the pass's room between channels with work, higher priorities
first without starving the lowest (``_share_room``), copies
their records into a private staging buffer (the copy comes before any
validation), answers bad headers and deadlines on the spot, then encodes each
model's records together into its contiguous float32 batch (``encode_rows``:
column-wise, vectorised ``log1p``), answers invalid payloads and cache hits, and
keeps the rest, in staging order, for inference. It takes from a
channel only as many records as its completion ring has room for, so every
answer of the pass is sure to fit.

``finish`` post-processes the model outputs into API ranges, fills the cache,
stamps latencies into the metrics, writes each channel's answers to its CQ
with one tail store, and only then releases the SQ slots (one head store):
a daemon killed at any point in between re-answers, it never loses a request.

Every function takes the five descriptors of ``_pass_layout`` (``Rings``,
``Batch``, ``Models``, ``Cache``, ``Counters``). Channels are reached only
through ringbuf's ``table_*`` functions (this module never touches a ring word
itself), and models only through ``models._serve`` (encode by model id),
``models.forward`` and ``models.postprocess``: nothing here names a model.

Numba caches ``step`` with those models functions compiled into it and keys the
cache on this file only: after editing ``models/_encode.py``, ``_forward.py`` or
``_post.py``, remove the ``*.nbi``/``*.nbc`` files under ``__pycache__`` (or touch
this file), or the daemon keeps running the old code.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic

from kernel_abi import ABI_VERSION, REQ_NO_CACHE, RESP_CACHE_HIT, Status
from models import forward, postprocess
from models._ops import MODEL_VERSION
from models._serve import PAYLOAD_LEN, encode_rows
from models._spec import N_MODEL_SLOTS
from ringbuf import (
    TIMED_OUT,
    WOKEN,
    monotonic_ns,
    spin_pause,
    table_answer,
    table_peek,
    table_ready,
    table_release,
    table_sleep,
    table_wake,
    yield_cpu,
)

from . import _cache as cache
from . import _metrics as met
from . import _metrics_compiled as met_jit
from ._errors import ConfigError
from ._pass_layout import (
    CHAN_BUSY_NS,
    CHAN_PRIORITY,
    CHAN_QUEUE_SHIFT,
    LOOP_BUSY_RETURNS,
    LOOP_COMPILED_PASSES,
    LOOP_EARLY_WAKES,
    LOOP_HANDOFFS,
    LOOP_HOUSEKEEPING_ASKED,
    LOOP_SLEEPS,
    LOOP_SPIN_NS,
    LOOP_TIMEOUT_RESCUES,
    LOOP_WAKE_NS,
    LOOP_WAKES,
    PASS_DRAIN_NS,
    PASS_FAULT,
    PASS_FAULT_COUNTDOWN,
    PASS_HANDOFF,
    PASS_MAX_QUEUE_NS,
    PASS_ROOM,
    PASS_SLEEP_NS,
    PASS_SPIN_MAX_NS,
    PASS_SPIN_NS,
    PASS_START,
    PASS_WAKE_NS,
)

# The test-only fault point (see ``fault_state``): which step of ``finish`` to die after.
FAULT_NONE, FAULT_AFTER_PUBLISH, FAULT_AFTER_RELEASE, FAULT_RAISE = range(4)
FAULT_POINTS = {"after_publish": FAULT_AFTER_PUBLISH, "after_release": FAULT_AFTER_RELEASE, "raise": FAULT_RAISE}
FAULT_EXIT_CODE = 86  # what a daemon killed by its fault point exits with
# Passes ``step`` may run back to back, with no sleep between them, before returning to Python
# (signals, housekeeping). A sleep starts the count again: a caller's wake-up must never end the
# call, or its request waits behind Python (the loop's return trip, ~0.1-0.3 ms cold).
MAX_INNER_PASSES = 64
# Heartbeat, gauges, watchdog and control commands at most this often (the daemon's housekeeping);
# ``step`` returns to Python before sleeping again once a call has run this long. Housekeeping is
# ~20 µs of Python warm but 250-330 µs in the serving daemon (cold caches, measured): at 10 ms it
# delayed ~1.2% of the requests of a caller paced at 20-100 µs by that much (their p99); at 50 ms
# 0.3%. Clients call a heartbeat stale after 2 s, systemd's watchdog after 10 s.
HOUSEKEEPING_NS = 50_000_000
# Once housekeeping is due, ``step`` returns for it from a sleep this short that nothing ended (a
# quiet moment: the last client has its answer and no request is in flight), not right after a pass.
QUIET_SLEEP_NS = 50_000
INITIAL_WAKE_NS = 20_000  # a futex wake-up on this VM, measured (docs/ARCHITECTURE.md); then learnt
MIN_SPIN_NS = 2_000  # a window that grows starts here
N_MODELS = N_MODEL_SLOTS  # arrays indexed by model id; row 0 unused
MAX_LEVEL = 7  # highest channel priority (``_config.MAX_PRIORITY``)
BUSY_WINDOW_NS = 10_000_000  # a channel counts as in use this long after it last had work (1,000 req/s: 1 ms apart)
LOWER_SHARE = 8  # levels below the top one take at most room / LOWER_SHARE a pass

__all__ = [
    "LOOP_BUSY_RETURNS", "LOOP_COMPILED_PASSES", "LOOP_EARLY_WAKES", "LOOP_HANDOFFS", "LOOP_HOUSEKEEPING_ASKED",
    "LOOP_SLEEPS", "LOOP_SPIN_NS", "LOOP_TIMEOUT_RESCUES", "LOOP_WAKES", "LOOP_WAKE_NS",
]  # fmt: skip


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
    the two steps whose order makes a crash lose nothing. ``raise:N``: the N-th
    publish raises ``RuntimeError`` out of the compiled pass instead (a bug in the
    pass), which the daemon must report as ``event=loop_failed`` and exit on.
    """
    if not spec:
        return FAULT_NONE, 0
    point, _, count = spec.partition(":")
    if point not in FAULT_POINTS or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"SHMD_TEST_FAULT must be after_publish:N, after_release:N or raise:N (N >= 1): {spec!r}")
    return FAULT_POINTS[point], int(count)


@njit(nogil=True, cache=True, inline="always")
def _fault_point(state, point):
    if state[PASS_FAULT] == point:
        state[PASS_FAULT_COUNTDOWN] -= 1
        if state[PASS_FAULT_COUNTDOWN] == 0:
            if point == FAULT_RAISE:
                raise RuntimeError("SHMD_TEST_FAULT=raise: injected failure in finish, after a CQ publish")
            _exit_now(FAULT_EXIT_CODE)


@njit(nogil=True, cache=True)
def _fill_level(ready, alloc, channels, level, start, room):
    """Water-fill ``room`` over the channels of priority ``level`` with work, from ``start``; how much went."""
    n_ch = ready.shape[0]
    used = 0
    for _ in range(n_ch):  # each round satisfies a channel or uses up the room
        active = 0
        for c in range(n_ch):
            if channels[c, CHAN_PRIORITY] == level and ready[c] > alloc[c]:
                active += 1
        if active == 0 or room == 0:
            break
        share = max(room // active, 1)
        for k in range(n_ch):
            c = (start + k) % n_ch
            if channels[c, CHAN_PRIORITY] != level:
                continue
            give = min(ready[c] - alloc[c], share, room)
            if give > 0:
                alloc[c] += give
                room -= give
                used += give
    return used


@njit(nogil=True, cache=True)
def _share_room(ready, alloc, channels, start, room, now):
    """Share the pass's ``room`` over the channels' demands (``ready``): priorities first, none starved.

    1. Every channel with work gets one record (the rotating ``start`` decides
       when there are more such channels than room): the lowest always progresses.
    2. Levels from the highest down, each water-filled from ``start``. The top
       level is the highest of the channels with work now or within the last
       BUSY_WINDOW_NS. The levels below it share ``room / LOWER_SHARE`` (step 1's
       records included): reserved for them (the top level takes the rest) and
       their limit, so a pass stays short while a higher channel is in use and
       its next request waits for a short pass, not a full one.
    """
    n_ch = ready.shape[0]
    alloc[:] = 0
    top = np.int64(-1)
    lowest = np.int64(MAX_LEVEL)
    for c in range(n_ch):
        prio = channels[c, CHAN_PRIORITY]
        if ready[c] > 0:
            channels[c, CHAN_BUSY_NS] = now
            lowest = min(lowest, prio)
        if ready[c] > 0 or (channels[c, CHAN_BUSY_NS] > 0 and now - channels[c, CHAN_BUSY_NS] < BUSY_WINDOW_NS):
            top = max(top, prio)
    if top < 0:
        return
    lower = max(room // LOWER_SHARE, 1)  # what the levels below ``top`` take together, at most
    for k in range(n_ch):
        c = (start + k) % n_ch
        if room > 0 and ready[c] > 0:
            alloc[c] = 1
            room -= 1
            if channels[c, CHAN_PRIORITY] < top:
                lower -= 1
    lower = max(lower, 0)
    wanted = 0  # what the lower levels still want, up to their share: kept from the top level
    for c in range(n_ch):
        if channels[c, CHAN_PRIORITY] < top:
            wanted += ready[c] - alloc[c]
    room -= _fill_level(ready, alloc, channels, top, start, room - min(wanted, lower, room))
    for level in range(top - 1, lowest - 1, -1):
        if room == 0 or lower == 0:
            return
        used = _fill_level(ready, alloc, channels, level, start, min(room, lower))
        room -= used
        lower -= used


@njit(nogil=True, cache=True)
def _answer(responses, j, status, error_field, counters, c):
    responses[j].status = status
    responses[j].error_field = error_field
    counters[c, met.REJECTED + status] += 1


@njit(nogil=True, cache=True, inline="always")
def drain(rings, batch, models, cache_, counters, spin_ns):
    """Copy, validate, encode and cache-probe up to ``PASS_ROOM`` records; how many.

    With nothing to take, spins up to ``spin_ns`` for work before answering 0.
    A pass that drains anything rotates the first channel for the next one.
    """
    table, state = rings.table, batch.state
    spin_from = monotonic_ns()
    while table_ready(table, rings.sq_state, rings.cq_state, rings.ready) == 0:
        spun = monotonic_ns() - spin_from
        if spun >= spin_ns:
            return 0
        spin_pause(spun)
    now = monotonic_ns()
    start = state[PASS_START]
    _share_room(rings.ready, batch.alloc, batch.channels, start, state[PASS_ROOM], now)
    state[PASS_DRAIN_NS] = now
    batch.counts[:] = 0
    n = 0
    for c in range(table.shape[0]):
        batch.offsets[c] = n
        if batch.alloc[c] == 0:
            continue
        got = table_peek(table, rings.sq_state, c, batch.staging[n:], batch.alloc[c])
        if got <= 0:
            batch.alloc[c] = 0
            continue
        batch.alloc[c] = got
        counters.channel[c, met.SUBMITTED] += got
        _admit(n, got, c, now, batch, models, counters)
        n += got
    batch.offsets[table.shape[0]] = n
    for mid in range(1, N_MODELS):
        if batch.counts[mid] > 0:
            _encode_and_probe(mid, now, batch, models, cache_, counters)
    if n > 0:
        state[PASS_START] = (start + 1) % table.shape[0]
    return n


@njit(nogil=True, cache=True, inline="always")
def _admit(first, got, c, now, batch, models, counters):
    """Decide the headers of channel ``c``'s staged records ``first .. first + got - 1``.

    Each is answered now (a status) or queued for its model's encoder. One call per
    channel, not per record: every call of a compiled function takes a reference to
    each array of its descriptors on entry and drops it on return (two atomic
    operations per array, ~30 arrays): per record that was ~300 ns, most of the drain.
    """
    reqs, responses, rows, counts = batch.reqs, batch.responses, batch.rows, batch.counts
    versions, per_model, per_channel = models.versions, counters.model, counters.channel
    max_queue_ns = batch.state[PASS_MAX_QUEUE_NS] << batch.channels[c, CHAN_QUEUE_SHIFT]  # lowest level first
    for j in range(first, first + got):
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
        batch.keys[j] = 0
        if req.abi_version != ABI_VERSION:
            _answer(responses, j, Status.BAD_VERSION, 0, per_channel, c)
            continue
        if mid <= 0 or mid >= N_MODELS or versions[mid] == 0:
            _answer(responses, j, Status.UNKNOWN_MODEL, 0, per_channel, c)
            continue
        per_model[mid, met.REQUESTS] += 1
        status = Status.OK
        if req.payload_len != PAYLOAD_LEN[mid]:
            status = Status.INVALID_INPUT
        elif req.deadline_ns != 0 and np.uint64(now) > req.deadline_ns:
            status = Status.DEADLINE_EXCEEDED
        elif max_queue_ns > 0 and req.submit_ns != 0 and np.int64(now) - np.int64(req.submit_ns) > max_queue_ns:
            status = Status.OVERLOADED
        if status != Status.OK:
            per_model[mid, met.ERRORS] += 1
            _answer(responses, j, status, 0, per_channel, c)
            continue
        r = counts[mid]
        rows[mid, r] = j
        counts[mid] = r + 1


@njit(nogil=True, cache=True)
def _channel_of(offsets, j):
    """The channel staged record ``j`` came from (``offsets``: each channel's first staged index)."""
    c = 0
    while offsets[c + 1] <= j:
        c += 1
    return c


@njit(nogil=True, cache=True, inline="always")
def _encode_and_probe(mid, now, batch, models, cache_, counters):
    """Encode model ``mid``'s queued records at once; answer invalid ones and cache hits; keep the rest.

    The rows kept for inference stay in staging order, their features moved up over the
    rows answered here.
    """
    cnt = batch.counts[mid]
    rows, feats, err = batch.rows[mid], batch.features[mid, :, : models.n_features[mid]], batch.enc_err
    encode_rows(models.payloads, mid, rows, cnt, feats, err, batch.enc_scratch)
    per_model = counters.model
    row_keys, row_slots = batch.row_keys, batch.row_slots
    cached = 0  # rows that look the cache up: valid, and not sent with REQ_NO_CACHE
    if cache_.ttl_ns[mid] > 0:
        for r in range(cnt):
            cached += err[r] == 0 and (batch.reqs[rows[r]].flags & REQ_NO_CACHE) == 0
    if cached > 0:  # every row's key at once, then every row looked up at once (a call per row costs more)
        cache.feature_keys(batch.features[mid], models.n_features[mid], cnt, cache_.quantum[mid], row_keys)
        for r in range(cnt):
            if err[r] != 0 or (batch.reqs[rows[r]].flags & REQ_NO_CACHE) != 0:
                row_keys[r] = 0  # not looked up, not inserted
        cache.lookup_rows(cache_, mid, batch.features[mid], models.n_features[mid], cnt, row_keys, now, row_slots,
                          batch.row_seen)  # fmt: skip
    kept = 0
    for r in range(cnt):
        j = rows[r]
        if err[r] != 0:
            per_model[mid, met.ERRORS] += 1
            _answer(batch.responses, j, Status.INVALID_INPUT, err[r], counters.channel, _channel_of(batch.offsets, j))
            continue
        if cached > 0 and row_keys[r] != 0:
            slot = row_slots[r]
            if slot >= 0:  # a hit
                resp = batch.responses[j]
                for i in range(cache.N_OUTPUTS):
                    resp.outputs[i] = cache_.values[mid, slot, i]
                resp.flags = RESP_CACHE_HIT
                per_model[mid, met.CACHE_HITS] += 1
                continue
            per_model[mid, met.CACHE_MISSES] += 1
            batch.keys[j] = row_keys[r]
            batch.slots[j] = -1 - slot
            batch.seen[j] = batch.row_seen[r]
        if kept != r:
            feats[kept] = feats[r]
        rows[kept] = j
        kept += 1
    batch.counts[mid] = kept


@njit(nogil=True, cache=True, inline="always")
def infer_compiled(batch, models):
    """Run every queued model the bank holds, in place; False if some queued model is not in it.

    Models missing from the bank (``litert``, ``tf``) are left for Python, which fills
    ``batch.raw`` for them before the next ``step``.
    """
    all_done = True
    bank = models.bank
    for mid in range(1, N_MODELS):
        cnt = batch.counts[mid]
        if cnt == 0:
            continue
        if bank.models[mid, MODEL_VERSION] == 0:
            all_done = False
            continue
        forward(bank, mid, batch.features[mid], cnt, batch.raw[mid], models.scratch)
    return all_done


@njit(nogil=True, cache=True, inline="always")
def finish(rings, batch, models, cache_, counters, n):
    """Post-process, cache, publish every channel's answers, then release its SQ slots.

    Then wakes the clients that sleep on their CQ (after every channel is
    published, so a woken client that takes this CPU delays no other
    channel's answers), and hands the CPU over when a wake-up began the pass
    (``PASS_HANDOFF``). Returns how many it woke.
    """
    now = monotonic_ns()
    state, responses, post = batch.state, batch.responses, batch.post
    drain_ns = state[PASS_DRAIN_NS]
    for mid in range(1, N_MODELS):
        cnt = batch.counts[mid]
        if cnt == 0:
            continue
        postprocess(mid, batch.raw[mid, :cnt], post[:cnt])
        counters.model[mid, met.INFERENCES] += cnt
        counters.model[mid, met.BATCHES] += 1
        met_jit.record_batch(counters.batch_hist, mid, cnt)
        misses = 0  # rows whose lookup missed and admitted them: each goes into the slot the lookup chose
        for r in range(cnt):
            j = batch.rows[mid, r]
            for i in range(post.shape[1]):
                responses[j].outputs[i] = post[r, i]
            misses += batch.keys[j] != 0 and batch.slots[j] != cache.NO_SLOT
        if misses > 0:
            cache.insert_rows(cache_, mid, batch.features[mid], models.n_features[mid], cnt, batch.rows[mid],
                              batch.keys, batch.slots, batch.seen, post, now)  # fmt: skip
    publish = monotonic_ns()
    for j in range(n):
        responses[j].service_ns = publish - drain_ns
        mid = np.int64(responses[j].model_id)
        if responses[j].status == Status.OK and 0 < mid < N_MODELS:
            met_jit.record_latency(counters.hist, counters.summary, mid, met.SERVICE, publish - drain_ns)
            submit = np.int64(batch.reqs[j].submit_ns)
            if 0 < submit <= publish:
                met_jit.record_latency(counters.hist, counters.summary, mid, met.E2E, publish - submit)
    table, wake = rings.table, batch.wake
    wakes = 0
    for c in range(table.shape[0]):
        wake[c] = False
        k = batch.alloc[c]
        if k == 0:
            continue
        first = batch.offsets[c]
        wake[c] = table_answer(table, rings.cq_state, c, batch.resp_bytes[first : first + k], k)
        _fault_point(state, FAULT_AFTER_PUBLISH)
        _fault_point(state, FAULT_RAISE)
        wakes += wake[c]
        counters.channel[c, met.COMPLETED] += k
        # Only now may the client reuse the request slots: the answers are out.
        table_release(table, rings.sq_state, c, k)
        _fault_point(state, FAULT_AFTER_RELEASE)
    if wakes:
        for c in range(table.shape[0]):
            if wake[c]:
                table_wake(table, c)
    if state[PASS_HANDOFF]:
        # A client's wake-up began this pass and put us on that client's CPU, where it now
        # waits, runnable, for these answers: run it before we prepare to sleep or return to
        # Python for housekeeping (up to ~0.2 ms that it would otherwise wait behind).
        state[PASS_HANDOFF] = 0
        counters.loop[LOOP_HANDOFFS] += 1
        yield_cpu()
    return wakes


@njit(nogil=True, cache=True)
def _adapt_spin(state, reqs, n, idle_from, spin_max_ns, loop):
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
    drain_ns = state[PASS_DRAIN_NS]
    latest = np.int64(0)
    for j in range(n):
        latest = max(latest, np.int64(reqs[j].submit_ns))
    sample = drain_ns - latest
    arrived = drain_ns
    if 0 < sample < 1_000_000:  # a clock of another machine, or a stamp long before the submit: ignore
        state[PASS_WAKE_NS] += (sample - state[PASS_WAKE_NS]) // 8
        arrived = max(latest, idle_from)  # when it was published, not when the wake-up got us here
    cap = min(spin_max_ns, 2 * state[PASS_WAKE_NS])
    waited = arrived - idle_from
    window = state[PASS_SPIN_NS]
    if waited <= cap:
        window = min(cap, max(2 * window, MIN_SPIN_NS))
    else:
        window = window // 2 if window >= 2 * MIN_SPIN_NS else 0
    state[PASS_SPIN_NS] = window
    loop[LOOP_SPIN_NS] = window
    loop[LOOP_WAKE_NS] = state[PASS_WAKE_NS]


def step_entry(rings, batch, models, cache_, counters):
    """``step`` compiled for these descriptors' types, to be called without numba's dispatcher.

    A call through the dispatcher first types its arguments: for five named tuples
    of ~30 arrays that costs ~8 µs of the ~11 µs a ``step`` call costs (measured),
    paid on every trip from Python (every pass with a model run from Python, so
    every cache miss of a ``litert`` daemon). The entry point skips it; it is only
    valid for descriptors of the same types, so callers resolve it again when they
    replace one.
    """
    return step.compile(tuple(typeof(a) for a in (rings, batch, models, cache_, counters, 0)))


@njit(nogil=True, cache=True)
def step(rings, batch, models, cache_, counters, n_prev):
    """Finish the previous pass (``n_prev`` records), then drain and run the next ones.

    One call from Python per trip: every call costs the unboxing of its
    arguments, so finishing and draining share one, and a pass whose models
    all run in the bank (or that needs none: cache hits, refusals) is
    finished in the next round here rather than after a trip to Python;
    bounded by MAX_INNER_PASSES back to back and by the housekeeping period,
    so Python still sees signals and housekeeping. With nothing to drain after spinning (the adaptive window
    ``PASS_SPIN_NS``, at most ``PASS_SPIN_MAX_NS``), sleeps on every SQ's
    wake-up word for at most ``PASS_SLEEP_NS`` (0: return at once; no spin
    either) and drains as soon as it is woken; a wake-up that finds nothing
    (a client's early wake: its request is on its way) spins ``PASS_SPIN_MAX_NS``
    for it before sleeping again. Returns the number of
    records drained that Python must run models for (then call again with
    it), or 0 after a sleep that timed out or was interrupted by a signal, or
    once MAX_INNER_PASSES passes ran with no sleep between them (all of them
    published), or for housekeeping.
    """
    state, loop = batch.state, counters.loop
    spin_max, sleep_ns = state[PASS_SPIN_MAX_NS], state[PASS_SLEEP_NS]
    n = n_prev
    spin = min(state[PASS_SPIN_NS], spin_max) if sleep_ns > 0 else spin_max
    idle_from = np.int64(0)
    called = monotonic_ns()
    due_from = np.int64(0)  # when housekeeping fell due in this call (0: not yet)
    passes = 0  # since the last sleep
    while passes < MAX_INNER_PASSES:
        passes += 1
        # Spinning on after waking clients is fine: the spin yields the CPU after
        # a few µs (spin_pause), so a client woken onto this CPU runs at once.
        if n > 0:
            loop[LOOP_WAKES] += finish(rings, batch, models, cache_, counters, n)
        started = monotonic_ns()
        if due_from == 0 and sleep_ns > 0 and (started - called >= HOUSEKEEPING_NS or loop[LOOP_HOUSEKEEPING_ASKED]):
            due_from = started  # a model load asked for it (LOOP_HOUSEKEEPING_ASKED): at the next quiet moment
        if due_from > 0 and started - due_from >= HOUSEKEEPING_NS:
            # No quiet moment for a whole period (traffic too dense for a quiet sleep to
            # time out): housekeeping now, between two passes. What was drained is published.
            loop[LOOP_BUSY_RETURNS] += 1
            return 0
        n = drain(rings, batch, models, cache_, counters, spin)
        if idle_from > 0 and n > 0:  # the drain after a wake-up: learn from it
            _adapt_spin(state, batch.reqs, n, idle_from, spin_max, loop)
        idle_from = 0
        spin = min(state[PASS_SPIN_NS], spin_max) if sleep_ns > 0 else spin_max
        if n == 0 and sleep_ns > 0:
            # Sparse traffic wakes each sleep with one request: a call that only returned after
            # sleeping its full timeout (wake-ups do not end a call) would let the heartbeat that
            # clients trust go stale. Once housekeeping is due
            # the sleep is short (QUIET_SLEEP_NS), and one that nothing ends returns for it: the
            # Python housekeeping (~0.2 ms) then runs while no request is in flight, not between
            # the client's wake-up and its answer (the client woke us onto its own CPU, where it
            # would wait behind it: at 10 ms gaps, with a 10 ms period, every other request did).
            # (A load that asked for housekeeping while we spun: a quiet sleep too, not a full one.)
            quiet = due_from > 0 or loop[LOOP_HOUSEKEEPING_ASKED] != 0
            timeout = min(sleep_ns, QUIET_SLEEP_NS) if quiet else sleep_ns
            loop[LOOP_SLEEPS] += 1
            state[PASS_HANDOFF] = 0
            found, outcome = table_sleep(rings.table, rings.sq_state, rings.cq_state, rings.ready, rings.waiters,
                                         timeout)  # fmt: skip
            # Counted back to back only: a paced caller wakes the loop once a request, and
            # returning after the MAX_INNER_PASSES-th wake-up made every 32nd request (a
            # wake-up and a pass each) wait behind Python, 0.1-0.3 ms (1 ms gaps: the p99).
            passes = 0
            if found == 0 and outcome == WOKEN:
                # Woken with nothing to take: a client announcing a request on its way (the HTTP
                # shim does as a request comes in, before parsing it). Spin for it rather than go
                # back to sleep, so it finds the loop awake: the wake-up overlapped its parse.
                loop[LOOP_EARLY_WAKES] += 1
                spin = spin_max
                continue
            if found == 0 or (outcome != WOKEN and outcome != TIMED_OUT):
                return 0
            if outcome == TIMED_OUT and timeout == sleep_ns:  # a quiet sleep's timeout is no safety net
                loop[LOOP_TIMEOUT_RESCUES] += 1
            state[PASS_HANDOFF] = 1
            idle_from = started
            spin = 0  # work is there: the next round drains it at once
            continue
        if n == 0:
            return 0
        if batch.counts.sum() > 0:
            if not infer_compiled(batch, models):
                return n  # Python runs the models the bank lacks, then calls again
            loop[LOOP_COMPILED_PASSES] += 1
    # Out of inner passes with a complete pass in hand: publish it before Python's turn
    # (housekeeping, signals), which would otherwise delay its answers.
    if n > 0:
        loop[LOOP_WAKES] += finish(rings, batch, models, cache_, counters, n)
    return 0
