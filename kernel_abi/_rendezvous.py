"""How a caller finds a channel and holds it: names, the lock, the wake-up words.

Facts a C or Rust caller would otherwise copy by hand from the Python code;
``python -m kernel_abi.gen`` emits each of them into the C header.

- Names: a prefix and a channel name are each 1-64 of ``[A-Za-z0-9_-]``. The
  channel segment is the POSIX shared-memory object ``/{prefix}.{channel}``
  (``/dev/shm/{prefix}.{channel}`` on Linux). ``stats`` is the daemon's own
  segment and never a channel name.
- Hold: a client holds its channel exclusively with a POSIX record lock
  (``fcntl(F_SETLK)``, ``F_WRLCK``) on byte ``LOCK_OFFSET`` (length
  ``LOCK_LENGTH``) of the segment; the kernel drops it when the holder dies.
- Wake-ups: a ring's consumer that finds nothing to read loads the ring's
  ``wake_seq``, sets NEED_WAKEUP in ``flags``, issues a sequentially
  consistent fence, re-checks the tail, and only then sleeps with
  ``FUTEX_WAIT`` on ``wake_seq`` expecting the value it loaded. A producer
  publishes the tail, fences, and when it sees NEED_WAKEUP increments
  ``wake_seq`` (atomically) and calls ``FUTEX_WAKE`` on it. Both are shared
  (not ``FUTEX_PRIVATE_FLAG``) futex operations: the word is in memory
  mapped by two processes. The daemon waits on every SQ's ``wake_seq`` at
  once (``futex_waitv``).
- Edge caches: a client may keep the daemon's OK answers to fresh inferences
  (not CACHE_HIT ones: their age is unknown) and answer an identical request
  (same model, same payload bytes) itself, marking it CACHE_HIT | LOCAL. It
  loads the channel header's ``cache_generation[model]`` and
  ``cache_ttl_ns[model]`` before submitting; the entry lives until
  ``submit_ns + ttl`` and only while ``cache_generation[model]`` still holds
  the value loaded then. The daemon writes the generation after clearing the
  model's cache (and swapping a model) and before its next pass, so no answer
  of the old cache or model is stored under the new generation.
"""

from __future__ import annotations

import re

NAME_MAX = 64
NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
NAME_PATTERN = re.compile(rf"^[{re.escape(NAME_CHARS)}]{{1,{NAME_MAX}}}$")
#: ``SEGMENT_NAME_FORMAT.format(prefix=..., channel=...)``; C: ``"/%s.%s"``.
SEGMENT_NAME_FORMAT = "/{prefix}.{channel}"
#: The daemon's metrics segment ``/{prefix}.stats``: reserved, never a channel.
STATS_NAME = "stats"
RESERVED_NAMES = (STATS_NAME,)
#: Most channels one daemon serves: it sleeps on every SQ's wake_seq at once
#: with futex_waitv, which takes at most 128 words.
MAX_CHANNELS = 128
#: Byte of the channel segment a client's exclusive record lock covers.
LOCK_OFFSET = 0
LOCK_LENGTH = 1


def check_name(what: str, value: str) -> None:
    """Raise ValueError unless ``value`` is a valid prefix or channel name."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"{what} must be 1-{NAME_MAX} of [A-Za-z0-9_-]: {what}={value!r}")


def segment_name(prefix: str, channel: str) -> str:
    """The POSIX shared-memory name of channel ``channel`` under ``prefix``."""
    check_name("prefix", prefix)
    check_name("channel", channel)
    return SEGMENT_NAME_FORMAT.format(prefix=prefix, channel=channel)
