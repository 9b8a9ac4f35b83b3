"""What the compiled pass is given: five descriptors and the named words of its arrays. No logic.

``step(rings, batch, models, cache, counters, n_prev)`` and its parts (``drain``,
``finish``, ``_admit``) take these five named tuples instead of dozens of positional
arrays; numba sees each as one typed tuple, and a field is reached by name
(``batch.counts``), so adding a buffer touches the tuple and the code that uses it only.

::

    Rings     the channels (ringbuf.ChannelTable's arrays): ring addresses, private ring
              states, ready counts, the futex wait list
    Batch     the pass's private buffers: staged request slots, their answers, per-model
              feature and raw-output batches, the rows each model answers, the
              encoders' scratch columns, and ``state``
              (the PASS_* words below: settings and what one pass tells the next)
    Models    what the models need: per-model payload views of the staging buffer, the
              served versions, the compiled bank and its scratch tile
    Cache     the result cache (``_cache.CacheArrays``' arrays), its TTLs and their adaptive bounds
    Counters  the metrics arrays in the stats segment, incl. the loop's own counters

Replacing a model version between passes is replacing ``Models`` (or its bank): nothing
in a pass holds on to it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# --- Batch.state: int64 words ---------------------------------------------------------
PASS_START = 0  # first channel the next drain serves (rotates, for fairness)
PASS_DRAIN_NS = 1  # when the pass in hand was drained (service time counts from here)
PASS_FAULT = 2  # test-only fault point (``_loop.fault_state``): which step of finish ...
PASS_FAULT_COUNTDOWN = 3  # ... and after how many times
PASS_ROOM = 4  # records one pass may take, over all channels (``max_batch``)
PASS_MAX_QUEUE_NS = 5  # answer OVERLOADED to requests queued longer; 0 = never
PASS_SPIN_MAX_NS = 6  # longest idle spin before sleeping (``spin_us``)
PASS_SLEEP_NS = 7  # longest sleep on the SQs' wake-up words; 0 = return instead of sleeping
PASS_SPIN_NS = 8  # the adaptive idle spin window now (``_loop._adapt_spin``)
PASS_WAKE_NS = 9  # the wake-up cost it has learnt
PASS_HANDOFF = 10  # 1: the pass in hand began with a wake-up; its ``finish`` yields the CPU to the client
PASS_STATE_WORDS = 11

# --- Batch.channels: int64[channels, CHAN_WORDS], one row per channel -----------------------
CHAN_PRIORITY = 0  # drain priority (higher first; ``_loop._share_room``)
CHAN_QUEUE_SHIFT = 1  # the channel sheds at PASS_MAX_QUEUE_NS << this (higher levels tolerate longer)
CHAN_BUSY_NS = 2  # when the channel last had work (a higher level busy lately bounds the lower ones)
CHAN_WORDS = 3

# --- Counters.loop: int64 words (in the stats segment, so tests and tools see them) -------
LOOP_SLEEPS = 0  # times the loop slept on the SQs' wake-up words
LOOP_TIMEOUT_RESCUES = 1  # sleeps that ended by timeout and then found work: a lost wake-up
LOOP_WAKES = 2  # clients woken after their answers were published
LOOP_SPIN_NS = 3  # the adaptive spin window now (ns)
LOOP_WAKE_NS = 4  # the wake-up cost learnt (ns)
LOOP_COMPILED_PASSES = 5  # passes whose models all ran inside the compiled pass
LOOP_HANDOFFS = 6  # passes a wake-up began that yielded the CPU once answered (``_loop.finish``)
LOOP_EARLY_WAKES = 7  # wake-ups that found no work (a client's early wake: ``_loop.step`` spins for it)
LOOP_BUSY_RETURNS = 8  # housekeeping returns that found no quiet moment for a period (``_loop.step``)
# Not a counter: nonzero asks for housekeeping now, not a period later (a model load request, a
# version the loader has prepared: ``_model_states.ask_housekeeping``); housekeeping clears it.
LOOP_HOUSEKEEPING_ASKED = 9
N_LOOP_COUNTERS = 10


class Rings(NamedTuple):
    table: np.ndarray  # int64[channels, ringbuf TABLE_COLUMNS]
    sq_state: np.ndarray  # uint64[channels, STATE_WORDS]
    cq_state: np.ndarray  # uint64[channels, STATE_WORDS]
    ready: np.ndarray  # int64[channels]: records each may give now
    waiters: np.ndarray  # uint64[channels, WAITV_WORDS]


class Batch(NamedTuple):
    state: np.ndarray  # int64[PASS_STATE_WORDS]
    staging: np.ndarray  # uint8[room, REQUEST_SLOT_SIZE]: the pass's copy of its requests
    reqs: np.ndarray  # REQUEST[room], a view of staging
    responses: np.ndarray  # RESPONSE[room]: answer j is for staged request j
    resp_bytes: np.ndarray  # uint8[room, RESPONSE_SLOT_SIZE], a view of responses
    keys: np.ndarray  # uint64[room]: cache key of request j (0: not cached)
    slots: np.ndarray  # int64[room]: the cache slot request j's answer goes to (its lookup chose it) ...
    seen: np.ndarray  # uint64[room]: ... and the key that slot held then (``_cache.insert``)
    row_keys: np.ndarray  # uint64[room]: cache key of each queued row of the model being probed (0: not looked up)
    row_slots: np.ndarray  # int64[room]: its lookup's answer (``_cache.lookup_rows``) ...
    row_seen: np.ndarray  # uint64[room]: ... and the key in the slot a miss takes
    features: np.ndarray  # float32[models, room, max features]: model m's batch in features[m, :counts[m]]
    raw: np.ndarray  # float32[models, room, max outputs]: its raw outputs
    post: np.ndarray  # float64[room, 4]: post-processed outputs of one model's batch
    counts: np.ndarray  # int64[models]: rows queued per model
    rows: np.ndarray  # int64[models, room]: staged index of each queued row
    enc_err: np.ndarray  # int32[room]: per queued row of the model being encoded, 0 or its bad field
    enc_scratch: np.ndarray  # float64: the encoders' columns (models._serve.new_scratch(room))
    alloc: np.ndarray  # int64[channels]: records taken from each channel
    offsets: np.ndarray  # int64[channels + 1]: first staged index of each channel's records
    wake: np.ndarray  # bool[channels]: the channel's client sleeps and was woken
    channels: np.ndarray  # int64[channels, CHAN_WORDS]: priority and shedding level, last busy time


class Models(NamedTuple):
    payloads: tuple  # models.payload_views(staging): one payload view per model
    versions: np.ndarray  # uint16[models]: served version, 0 = not served
    n_features: np.ndarray  # int64[models]
    bank: tuple  # models.Bank: the models that run inside the pass (none for litert/tf)
    scratch: np.ndarray  # float32 scratch tile for the bank (models.scratch_for)


class Cache(NamedTuple):
    buckets: np.ndarray  # _cache.BUCKET[models, capacity / WAYS]: keys and expiries, a line a bucket
    values: np.ndarray  # float64[models, capacity, outputs]
    words: np.ndarray  # uint32: each slot's full key (its features), per model from key_at, key_stride a slot
    key_at: np.ndarray
    key_stride: np.ndarray
    ttl_ns: np.ndarray  # int64[models]: the TTL now (the stats segment's ``cache_ttl_ns``: clients read it)
    quantum: np.ndarray
    stats: np.ndarray
    adapt: np.ndarray  # float64[models, _cache.ADAPT_WORDS]: adaptive TTL bounds and tolerance (0: fixed)
    doorkeeper: np.ndarray  # uint16[models, capacity * DOOR_PER_ENTRY]: fingerprints of keys seen (admission filter)
    admit: np.ndarray  # int64[models, _cache.ADMIT_WORDS]: the admission filter's window and state


class Counters(NamedTuple):
    model: np.ndarray
    hist: np.ndarray
    summary: np.ndarray
    batch_hist: np.ndarray
    channel: np.ndarray
    loop: np.ndarray  # int64[N_LOOP_COUNTERS]
