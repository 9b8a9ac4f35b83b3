"""Building the compiled pass's five descriptors (``_pass_layout``) from the daemon's parts.

Kept apart from ``Daemon`` so tests can build a pass around rings of their own and drive
``drain`` and ``finish`` without a daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

import models
import ringbuf
from kernel_abi import REQUEST, REQUEST_SLOT_SIZE, RESPONSE, ModelId
from models._serve import MAX_FEATURES, MAX_OUTPUTS, new_scratch, payload_views

from ._cache import CacheArrays
from ._loop import INITIAL_WAKE_NS
from ._metrics import MetricsArrays
from ._pass_layout import (
    CHAN_PRIORITY,
    CHAN_QUEUE_SHIFT,
    CHAN_WORDS,
    N_LOOP_COUNTERS,
    PASS_FAULT,
    PASS_FAULT_COUNTDOWN,
    PASS_MAX_QUEUE_NS,
    PASS_ROOM,
    PASS_SLEEP_NS,
    PASS_SPIN_MAX_NS,
    PASS_STATE_WORDS,
    PASS_WAKE_NS,
    Batch,
    Cache,
    Counters,
    Models,
    Rings,
)

N_MODELS = models.N_MODEL_SLOTS


def new_batch(
    room: int, n_channels: int, *, max_queue_ns: int = 0, fault: tuple[int, int] = (0, 0),
    priorities: Sequence[int] | None = None,
) -> Batch:  # fmt: skip
    """The pass's private buffers for ``room`` records a pass from ``n_channels`` channels.

    ``priorities`` (one per channel, higher drains first; default all equal) also set
    where each channel sheds: the lowest level at ``max_queue_ns``, each level above
    it at twice the one below (``CHAN_QUEUE_SHIFT``), so overload sheds the lowest first.
    """
    prio = np.zeros(n_channels, np.int64) if priorities is None else np.asarray(priorities, np.int64)
    if prio.shape != (n_channels,):
        raise ValueError(f"one priority per channel: priorities={list(prio)} channels={n_channels}")
    channels = np.zeros((n_channels, CHAN_WORDS), np.int64)
    channels[:, CHAN_PRIORITY] = prio
    channels[:, CHAN_QUEUE_SHIFT] = np.searchsorted(np.unique(prio), prio)  # the level's rank, lowest 0
    state = np.zeros(PASS_STATE_WORDS, np.int64)
    state[PASS_ROOM] = room
    state[PASS_MAX_QUEUE_NS] = max_queue_ns
    state[PASS_FAULT], state[PASS_FAULT_COUNTDOWN] = fault
    state[PASS_WAKE_NS] = INITIAL_WAKE_NS
    staging = np.zeros((room, REQUEST_SLOT_SIZE), np.uint8)
    responses = np.zeros(room, RESPONSE)
    return Batch(
        state=state,
        staging=staging,
        reqs=staging.view(REQUEST).reshape(room),
        responses=responses,
        resp_bytes=responses.view(np.uint8).reshape(room, -1),
        keys=np.zeros(room, np.uint64),
        slots=np.zeros(room, np.int64),
        seen=np.zeros(room, np.uint64),
        row_keys=np.zeros(room, np.uint64),
        row_slots=np.zeros(room, np.int64),
        row_seen=np.zeros(room, np.uint64),
        features=np.zeros((N_MODELS, room, MAX_FEATURES), np.float32),
        raw=np.zeros((N_MODELS, room, MAX_OUTPUTS), np.float32),
        post=np.zeros((room, 4), np.float64),
        counts=np.zeros(N_MODELS, np.int64),
        rows=np.zeros((N_MODELS, room), np.int64),
        enc_err=np.zeros(room, np.int32),
        enc_scratch=new_scratch(room),
        alloc=np.zeros(n_channels, np.int64),
        offsets=np.zeros(n_channels + 1, np.int64),
        wake=np.zeros(n_channels, np.bool_),
        channels=channels,
    )


def set_wait(batch: Batch, spin_ns: int, sleep_ns: int) -> None:
    """How long the next ``step`` may spin (the window it learns stays below), then sleep, when idle."""
    batch.state[PASS_SPIN_MAX_NS] = spin_ns
    batch.state[PASS_SLEEP_NS] = sleep_ns


def new_models(batch: Batch, runners: Mapping[int, models.Runner]) -> Models:
    """What the pass needs of ``runners``; those of the compiled backend go into its bank.

    A new version is served by building a new ``Models`` and passing it to the next
    ``step`` (nothing else holds the bank).
    """
    versions = np.zeros(N_MODELS, np.uint16)
    n_features = np.zeros(N_MODELS, np.int64)
    programs = {}
    for mid, runner in runners.items():
        versions[mid] = runner.version
        if isinstance(runner, models.CompiledRunner):
            programs[int(mid)] = (runner.program, runner.version)
    for mid in ModelId:
        n_features[mid] = models.N_FEATURES[mid]
    bank = models.make_bank(programs, N_MODELS)
    return Models(payload_views(batch.staging), versions, n_features, bank, models.scratch_for(bank))


def rings_of(table: ringbuf.ChannelTable) -> Rings:
    """The channel table's arrays (updated in place when a channel is re-bound)."""
    return Rings(table.table, table.sq_state, table.cq_state, table.ready, table.waiters)


def new_cache(capacity: int) -> CacheArrays:
    """The result cache of every model, ``capacity`` entries each, full keys as long as its features."""
    widths = [0] * N_MODELS
    for mid in ModelId:
        widths[mid] = models.N_FEATURES[mid]
    return CacheArrays.new(N_MODELS, capacity, widths)


def cache_of(c: CacheArrays) -> Cache:
    return Cache(c.buckets, c.values, c.words, c.key_at, c.key_stride, c.ttl_ns, c.quantum, c.stats, c.adapt,
                 c.doorkeeper, c.admit)  # fmt: skip


def counters_of(m: MetricsArrays, loop: np.ndarray | None = None) -> Counters:
    if loop is None:
        loop = np.zeros(N_LOOP_COUNTERS, np.int64)
    return Counters(m.model, m.hist, m.summary, m.batch_hist, m.channel, loop)
