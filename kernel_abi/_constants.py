"""Numbers of the wire format: magic, version, model ids, status codes, flags.

No logic lives here. Every name below is emitted into the C header by
``python -m kernel_abi.gen``; change a value and the header changes with it.
"""

from __future__ import annotations

import enum

#: Bumped on any change to a record or header layout, or to the wake-up or
#: rendezvous rules (v2: futex wake-up words replace the POSIX semaphores).
ABI_VERSION = 2

#: b"SHMDRING" read as a little-endian u64: first word of every ring header.
RING_MAGIC = int.from_bytes(b"SHMDRING", "little")
#: b"SHMDCHAN" read as a little-endian u64: first word of every channel segment.
CHANNEL_MAGIC = int.from_bytes(b"SHMDCHAN", "little")

CACHE_LINE = 64
#: Every header field written by a different process sits alone in a block this
#: big: two cache lines, so adjacent-line prefetch cannot make them share.
BLOCK = 128


class ModelId(enum.IntEnum):
    """Which prediction a request asks for. 0 is never valid."""

    WORKLOAD = 1
    THREAT = 2
    FAILURE = 3
    MEMORY = 4


class Status(enum.IntEnum):
    """Outcome of one request, carried in the response slot."""

    OK = 0
    INVALID_INPUT = 1  # a payload field failed validation; error_field names it
    UNKNOWN_MODEL = 2  # model_id names no loaded model
    DEADLINE_EXCEEDED = 3  # deadline_ns had passed before inference
    OVERLOADED = 4  # the daemon shed the request
    INTERNAL = 5  # the daemon failed; the request itself may be fine
    BAD_VERSION = 6  # the record's abi_version is not ABI_VERSION


class RingKind(enum.IntEnum):
    SUBMISSION = 1
    COMPLETION = 2


class RequestFlagBit(enum.IntEnum):
    NO_CACHE = 0  # answer with a fresh inference even if the cache has one


class ResponseFlagBit(enum.IntEnum):
    CACHE_HIT = 0  # outputs came from the result cache
    # Client-side only, never set by the daemon: the client's edge cache answered
    # (with CACHE_HIT) without a round trip; the daemon never saw the request.
    LOCAL = 14
    # Client-side only, never set by the daemon: a client's rule-based fallback
    # answered instead of the daemon (the C client's circuit breaker).
    FALLBACK = 15


class RingFlagBit(enum.IntEnum):
    NEED_WAKEUP = 0  # the consumer sleeps: a producer must bump wake_seq and FUTEX_WAKE it


REQ_NO_CACHE = 1 << RequestFlagBit.NO_CACHE
RESP_CACHE_HIT = 1 << ResponseFlagBit.CACHE_HIT
RESP_LOCAL = 1 << ResponseFlagBit.LOCAL
RESP_FALLBACK = 1 << ResponseFlagBit.FALLBACK
RING_NEED_WAKEUP = 1 << RingFlagBit.NEED_WAKEUP

#: Arrays indexed by model id (row 0 unused), e.g. the channel header's cache words.
MODEL_SLOTS = max(ModelId) + 1

#: Every model answers with four numbers; their meaning per model is in
#: ``OUTPUT_NAMES``.
N_OUTPUTS = 4

OUTPUT_NAMES: dict[ModelId, tuple[str, str, str, str]] = {
    ModelId.WORKLOAD: ("predictedCpu", "predictedMemory", "predictedGpu", "confidence"),
    ModelId.THREAT: ("threatScore", "threatType", "confidence", "recommendedAction"),
    ModelId.FAILURE: ("failureProbability", "predictedTime", "confidence", "failureType"),
    ModelId.MEMORY: ("nextAddress", "accessProbability", "accessType", "confidence"),
}


class Severity(enum.IntEnum):
    """Severity of a threat anomaly (API.md: low/medium/high/critical)."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


class ThreatType(enum.IntEnum):
    NONE = 0
    EXFILTRATION = 1
    PRIVILEGE_ESCALATION = 2
    DENIAL_OF_SERVICE = 3
    CRYPTOMINING = 4
    LATERAL_MOVEMENT = 5


class RecommendedAction(enum.IntEnum):
    ALLOW = 0
    MONITOR = 1
    THROTTLE = 2
    ISOLATE = 3
    TERMINATE = 4


class FailureType(enum.IntEnum):
    NONE = 0
    RESOURCE_EXHAUSTION = 1
    PERFORMANCE_DEGRADATION = 2
    CRASH = 3
    HANG = 4
    DATA_CORRUPTION = 5


class AccessType(enum.IntEnum):
    READ = 0
    WRITE = 1
    EXECUTE = 2
