"""The wire format, defined once as numpy structured dtypes.

A channel is one POSIX shared-memory segment::

    0                      CHANNEL_HEADER_SIZE
    +----------------------+---------------------------+-------------------------+
    | channel header       | SQ: ring header | slots   | CQ: ring header | slots |
    +----------------------+---------------------------+-------------------------+
                           ^ sq_offset                 ^ cq_offset

Each ring header is a run of ``BLOCK``-byte blocks; every field written by a
different process (producer tail, consumer head, consumer flags, each side's
counters) sits alone in its block::

    block 0  magic, abi_version, slot_size, capacity, kind   (written once, at creation)
    block 1  tail                                            (producer, release store)
    block 2  head                                            (consumer, release store)
    block 3  flags (NEED_WAKEUP)                             (consumer)
    block 4  producer counters, wake_seq (futex word)        (producer)
    block 5  consumer counters                               (consumer)

A record becomes visible to the consumer when the producer's release store of
``tail`` passes its index; its slot is free again when the consumer's release
store of ``head`` passes it. Indices are monotonically increasing u64 counters;
the slot of index ``i`` is ``i & (capacity - 1)``.

Request slot (``REQUEST_SLOT_SIZE`` bytes, cache-line multiple)::

    0   request_id u64 | 8 model_id u16 | 10 abi_version u16 | 12 flags u32
    16  payload_len u32 | 20 reserved u32 | 24 submit_ns u64 | 32 deadline_ns u64
    40  payload: one of the four model payload structs (a union in C)

Response slot (``RESPONSE_SLOT_SIZE`` bytes, one cache line)::

    0   request_id u64 | 8 status u16 | 10 flags u16 | 12 model_id u16
    14  model_version u16 | 16 error_field u16 | 18 reserved u16 | 20 reserved u32
    24  service_ns u64 | 32 outputs f64[4]
"""

from __future__ import annotations

import numpy as np

from ._constants import BLOCK, CACHE_LINE, MODEL_SLOTS, N_OUTPUTS, ModelId


def _struct(fields: list[tuple], itemsize: int | None = None) -> np.dtype:
    """A C-aligned little-endian struct, optionally padded to ``itemsize``."""
    dt = np.dtype(fields, align=True)
    if itemsize is None:
        return dt
    if dt.itemsize > itemsize:
        raise ValueError(f"struct does not fit: itemsize={dt.itemsize} limit={itemsize}")
    return np.dtype(
        {
            "names": list(dt.names),
            "formats": [dt.fields[n][0] for n in dt.names],
            "offsets": [dt.fields[n][1] for n in dt.names],
            "itemsize": itemsize,
            "aligned": True,
        }
    )


# Strings (agentId, component) travel as their 64-bit FNV-1a hash: see _hash.py.

WORKLOAD_PAYLOAD = _struct(
    [
        ("agent_hash", "<u8"),
        ("historical_cpu", "<f4", (10,)),  # [0,1], oldest first
        ("historical_memory", "<u8", (10,)),  # bytes
        ("historical_gpu", "<f4", (10,)),  # [0,1]; zeros when the caller has no GPU
        ("current_cpu", "<f4"),  # [0,1]
        ("current_gpu", "<f4"),  # [0,1]
        ("current_memory", "<u8"),  # bytes
        ("time_of_day", "u1"),  # hour 0..23
        ("day_of_week", "u1"),  # 0..6
    ]
)

THREAT_PAYLOAD = _struct(
    [
        ("agent_hash", "<u8"),
        ("average_latency", "<f4"),  # ms, >= 0
        ("error_rate", "<f4"),  # [0,1]
        ("resource_usage", "<f4"),  # [0,1]
        ("message_frequency", "<f4"),  # per s, >= 0
        ("historical_threats", "<f4", (10,)),  # [0,1], zero-padded
        ("time_since_last_threat", "<f4"),  # ms, >= 0
        ("anomaly_count", "<u2"),  # 0..64
        ("severity_counts", "<u2", (4,)),  # per Severity; sums to anomaly_count
        ("distinct_anomaly_types", "<u2"),  # <= anomaly_count
    ]
)

FAILURE_PAYLOAD = _struct(
    [
        ("component_hash", "<u8"),
        ("health_score", "<f4"),  # [0,1]
        ("current_value", "<f4"),  # finite
        ("baseline", "<f4"),  # finite
        ("trend", "<f4"),  # [-1,1]
        ("historical_health", "<f4", (20,)),  # [0,1]
        ("time_since_last_failure", "<f4"),  # ms, >= 0
        ("failure_history", "u1", (10,)),  # 0/1
    ]
)

MEMORY_PAYLOAD = _struct(
    [
        ("agent_hash", "<u8"),
        ("access_history", "<f4", (20,)),  # normalised addresses, [0,1]
        ("access_timestamps", "<f8", (20,)),  # >= 0; f64 keeps ns-scale clocks exact
        ("access_types", "u1", (20,)),  # AccessType 0..2
        ("current_address", "<f4"),  # [0,1]
        ("locality_score", "<f4"),  # [0,1]
    ]
)

PAYLOADS: dict[ModelId, np.dtype] = {
    ModelId.WORKLOAD: WORKLOAD_PAYLOAD,
    ModelId.THREAT: THREAT_PAYLOAD,
    ModelId.FAILURE: FAILURE_PAYLOAD,
    ModelId.MEMORY: MEMORY_PAYLOAD,
}

REQUEST_HEADER_FIELDS: list[tuple] = [
    ("request_id", "<u8"),  # caller-chosen, echoed in the response
    ("model_id", "<u2"),  # ModelId
    ("abi_version", "<u2"),  # ABI_VERSION
    ("flags", "<u4"),  # REQ_* bits
    ("payload_len", "<u4"),  # sizeof the model's payload struct
    ("reserved", "<u4"),
    ("submit_ns", "<u8"),  # CLOCK_MONOTONIC at submit
    ("deadline_ns", "<u8"),  # CLOCK_MONOTONIC; 0 = no deadline
]
REQUEST_HEADER = _struct(REQUEST_HEADER_FIELDS)
PAYLOAD_OFFSET = REQUEST_HEADER.itemsize
PAYLOAD_SIZE = max(dt.itemsize for dt in PAYLOADS.values())


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


REQUEST_SLOT_SIZE = _round_up(PAYLOAD_OFFSET + PAYLOAD_SIZE, CACHE_LINE)

#: The generic request slot: header plus an opaque payload area.
REQUEST = _struct(
    [*REQUEST_HEADER_FIELDS, ("payload", "u1", (REQUEST_SLOT_SIZE - PAYLOAD_OFFSET,))],
    REQUEST_SLOT_SIZE,
)

#: The same slot seen as one model's request; views of one buffer through
#: REQUEST and these dtypes alias byte for byte.
REQUESTS: dict[ModelId, np.dtype] = {
    mid: _struct([*REQUEST_HEADER_FIELDS, ("payload", dt)], REQUEST_SLOT_SIZE)
    for mid, dt in PAYLOADS.items()
}

RESPONSE = _struct(
    [
        ("request_id", "<u8"),  # as submitted
        ("status", "<u2"),  # Status
        ("flags", "<u2"),  # RESP_* bits
        ("model_id", "<u2"),  # ModelId
        ("model_version", "<u2"),  # version from the model's manifest
        ("error_field", "<u2"),  # 1-based index into the payload's fields; 0 = none
        ("reserved0", "<u2"),
        ("reserved1", "<u4"),
        ("service_ns", "<u8"),  # daemon-side: drained to completion published
        ("outputs", "<f8", (N_OUTPUTS,)),  # see OUTPUT_NAMES
    ],
    CACHE_LINE,
)
RESPONSE_SLOT_SIZE = RESPONSE.itemsize


def _blocks(blocks: list[list[tuple[str, str]]]) -> np.dtype:
    """A header whose i-th list of fields starts at byte ``i * BLOCK``."""
    names, formats, offsets = [], [], []
    for i, fields in enumerate(blocks):
        dt = np.dtype(fields, align=True)
        if dt.itemsize > BLOCK:
            raise ValueError(f"block does not fit: block={i} size={dt.itemsize}")
        for name in dt.names:
            names.append(name)
            formats.append(dt.fields[name][0])
            offsets.append(i * BLOCK + dt.fields[name][1])
    return np.dtype(
        {
            "names": names,
            "formats": formats,
            "offsets": offsets,
            "itemsize": len(blocks) * BLOCK,
            "aligned": True,
        }
    )


RING_HEADER = _blocks(
    [
        [
            ("magic", "<u8"),  # RING_MAGIC
            ("abi_version", "<u4"),  # ABI_VERSION
            ("slot_size", "<u4"),  # bytes per slot
            ("capacity", "<u4"),  # slots, a power of two
            ("kind", "<u4"),  # RingKind
        ],
        [("tail", "<u8")],  # next index the producer will fill
        [("head", "<u8")],  # next index the consumer will read
        [("flags", "<u4")],  # RING_* bits, set by the consumer
        [
            ("full_events", "<u8"),  # produce calls that found no room
            ("produced", "<u8"),  # records published
            # The consumer sleeps on this 32-bit word (FUTEX_WAIT); the producer
            # bumps it and FUTEX_WAKEs it when it sees NEED_WAKEUP (_rendezvous.py).
            ("wake_seq", "<u4"),
        ],
        [
            ("consumed", "<u8"),  # records released
            ("corrupt_events", "<u8"),  # invalid indices seen by the consumer
        ],
    ]
)
RING_HEADER_SIZE = RING_HEADER.itemsize

CHANNEL_HEADER = _blocks(
    [
        [
            ("magic", "<u8"),  # CHANNEL_MAGIC
            ("abi_version", "<u4"),  # ABI_VERSION
            ("sq_offset", "<u4"),  # byte offset of the SQ ring header
            ("cq_offset", "<u4"),  # byte offset of the CQ ring header
            ("segment_size", "<u4"),  # bytes in the whole segment
        ],
        [
            ("daemon_pid", "<u4"),  # pid of the serving daemon; 0 = none
            ("reserved", "<u4"),
            ("daemon_heartbeat_ns", "<u8"),  # CLOCK_MONOTONIC of its last pass
            # The daemon's result cache as clients' edge caches see it, per model id
            # (row 0 unused). Written by the daemon only, in bytes that were padding
            # before (zeros: no edge caching), so older clients are unaffected.
            ("cache_ttl_ns", "<u8", (MODEL_SLOTS,)),  # the TTL the daemon uses now; 0 = no caching
            # Bumped (never reused, across restarts too: CLOCK_MONOTONIC-based) after the
            # daemon's cache of the model is cleared, e.g. on a model swap: a client's
            # local entry made under another generation is not served.
            ("cache_generation", "<u8", (MODEL_SLOTS,)),
        ],
    ]
)
CHANNEL_HEADER_SIZE = CHANNEL_HEADER.itemsize


def ring_bytes(capacity: int, slot_size: int) -> int:
    """Bytes one ring (header and slots) takes in a channel segment."""
    return RING_HEADER_SIZE + capacity * slot_size


def channel_layout(sq_capacity: int, cq_capacity: int) -> tuple[int, int, int]:
    """``(sq_offset, cq_offset, segment_size)`` of a channel with these capacities."""
    sq_offset = CHANNEL_HEADER_SIZE
    cq_offset = sq_offset + ring_bytes(sq_capacity, REQUEST_SLOT_SIZE)
    return sq_offset, cq_offset, cq_offset + ring_bytes(cq_capacity, RESPONSE_SLOT_SIZE)


def payload_field_name(model: ModelId, error_field: int) -> str:
    """Name of the field a response's 1-based ``error_field`` points at, or ''."""
    names = PAYLOADS[model].names
    return names[error_field - 1] if 0 < error_field <= len(names) else ""
