"""The Python clients' circuit breaker: the C client's semantics (kernel_abi/c/README.md).

- CLOSED: the daemon answers. ``trip_after`` calls in a row that miss their
  deadline (no answer in time, or the daemon's DEADLINE_EXCEEDED) open it; so
  does, at once, a daemon that is gone (``daemon_pid`` 0 or no such process,
  heartbeat older than ``heartbeat_stale``) or a corrupt channel.
- OPEN: the caller's ``fallback(model, fields)`` answers at once, without
  touching the rings, until ``cooldown`` has passed.
- HALF_OPEN: the next call probes the daemon; an answer in time closes the
  breaker, a miss opens it again for another cool-down.

The daemon's OVERLOADED and INTERNAL answers are replaced by the fallback's
too, but do not count toward ``trip_after`` (as in C). Caller mistakes
(invalid input, unknown model) are raised, never hidden behind a fallback.

A fallback answer is the dict the fallback returned plus ``"fallback": True``
(the Python form of the FALLBACK flag, which the daemon never sets).

A batch (``predict_many``) is one call: while open every item gets the
fallback's answer; once asked, the fallback answers each item the daemon could
not (no answer in time, DEADLINE_EXCEEDED, OVERLOADED, INTERNAL), and items
past their deadline count as one missed deadline.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._errors import ChannelError, DeadlineExceeded, InternalError, NotReady, Overloaded

#: ``fallback(model, fields) -> prediction dict``: the caller's rule-based answer.
Fallback = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


class State(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass
class BreakerStats:
    """Counters of one client's breaker (the C client's ``shmd_client_stats``)."""

    daemon_answers: int = 0
    fallback_answers: int = 0
    deadline_misses: int = 0
    trips: int = 0  # CLOSED/HALF_OPEN -> OPEN
    recoveries: int = 0  # HALF_OPEN -> CLOSED


class Breaker:
    """When to ask the daemon and when to answer with the fallback."""

    def __init__(
        self,
        fallback: Fallback,
        *,
        cooldown: float = 0.2,
        trip_after: int = 3,
        heartbeat_stale: float = 2.0,
    ) -> None:
        if not callable(fallback):
            raise TypeError(f"fallback must be callable(model, fields) -> dict: fallback={fallback!r}")
        if trip_after < 1 or cooldown < 0:
            raise ValueError(f"breaker needs trip_after >= 1 and cooldown >= 0: trip_after={trip_after} "
                             f"cooldown={cooldown}")  # fmt: skip
        self.fallback = fallback
        self.cooldown_ns = int(cooldown * 1e9)
        self.trip_after = trip_after
        self.stale_ns = int(heartbeat_stale * 1e9)
        self.state = State.CLOSED
        self.open_until_ns = 0
        self.misses = 0  # in a row
        self.last_error = ""
        self.stats = BreakerStats()

    def allow(self) -> bool:
        """Whether this call may ask the daemon (moves OPEN to HALF_OPEN once the cool-down is over)."""
        if self.state == State.OPEN:
            if time.monotonic_ns() < self.open_until_ns:
                return False
            self.state = State.HALF_OPEN
        return True

    def answered(self) -> None:
        self.stats.daemon_answers += 1
        if self.state == State.HALF_OPEN:
            self.stats.recoveries += 1
        self.state = State.CLOSED
        self.misses = 0

    def missed(self, why: str) -> None:
        """A deadline missed: opens the breaker after ``trip_after`` in a row (at once when probing)."""
        self.stats.deadline_misses += 1
        self.misses += 1
        self.last_error = why
        if self.state == State.HALF_OPEN or self.misses >= self.trip_after:
            self.trip(why)

    def trip(self, why: str) -> None:
        if self.state != State.OPEN:
            self.stats.trips += 1
        self.state = State.OPEN
        self.open_until_ns = time.monotonic_ns() + self.cooldown_ns
        self.misses = 0
        self.last_error = why

    def answer(self, model: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fallback's answer, marked."""
        self.stats.fallback_answers += 1
        return {**self.fallback(model, fields), "fallback": True}

    def daemon_gone(self, header: np.void) -> str | None:
        """Why the channel's daemon cannot answer (no pid, no such process, stale heartbeat), or None."""
        pid = int(header["daemon_pid"])
        if pid == 0:
            return "the channel has no daemon (daemon_pid=0)"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"the channel's daemon is gone: daemon_pid={pid} is no process"
        except PermissionError:
            pass  # alive, just not ours to signal
        age = time.monotonic_ns() - int(header["daemon_heartbeat_ns"])
        if self.stale_ns and age > self.stale_ns:
            return f"the channel's daemon (pid {pid}) is hung: heartbeat {age / 1e6:.0f} ms old"
        return None

    def blocked(self, header: np.void) -> bool:
        """Whether this call must not ask the daemon: the breaker is open, or (checked when probing, or
        when the channel shows no daemon) the daemon is gone, which trips it."""
        if not self.allow():
            return True
        if self.state == State.HALF_OPEN or int(header["daemon_pid"]) == 0:  # a probe checks thoroughly
            gone = self.daemon_gone(header)
            if gone:
                self.trip(gone)
                return True
        return False

    def judge(self, err: Exception, header: np.void) -> None:
        """Count the daemon's failure ``err`` (a miss, or a trip); raise it if it was the caller's fault."""
        if isinstance(err, NotReady | DeadlineExceeded):
            gone = self.daemon_gone(header) if isinstance(err, NotReady) else None
            if gone:
                self.trip(gone)
            else:
                self.missed(str(err))
        elif isinstance(err, ChannelError):  # corrupt channel and the like: no use asking again before the cool-down
            self.trip(str(err))
        elif not isinstance(err, Overloaded | InternalError):
            raise err

    def settle(self, model: str, items: Sequence[Mapping[str, Any]], results: list[Any]) -> list[Any]:
        """A batch's daemon answers (errors in place), with the fallback's answer for each item the daemon
        could not serve (DEADLINE_EXCEEDED, OVERLOADED, INTERNAL); other errors stay for the caller.
        Items past their deadline count as one missed deadline for the whole call."""
        missed = None
        out = []
        for fields, result in zip(items, results, strict=True):
            if isinstance(result, DeadlineExceeded | Overloaded | InternalError):
                if isinstance(result, DeadlineExceeded):
                    missed = result
                result = self.answer(model, fields)
            out.append(result)
        if missed is None:
            self.answered()
        else:
            self.missed(str(missed))
        return out

    def call(
        self, model: str, fields: Mapping[str, Any], header: np.void, ask: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """``ask()`` the daemon unless the breaker says otherwise; the fallback answers what it cannot."""
        return self.call_many(model, [fields], header, lambda: [ask()])[0]

    async def call_async(
        self, model: str, fields: Mapping[str, Any], header: np.void, ask: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """As ``call``, awaiting ``ask()``."""

        async def one() -> list[Any]:
            return [await ask()]

        return (await self.call_many_async(model, [fields], header, one))[0]

    def call_many(
        self, model: str, items: Sequence[Mapping[str, Any]], header: np.void, ask: Callable[[], list[Any]]
    ) -> list[Any]:
        """``ask()`` the daemon for a batch (its answers, per-item errors in place) unless the breaker says
        otherwise; the fallback answers every item the daemon could not (``settle``)."""
        if self.blocked(header):
            return [self.answer(model, fields) for fields in items]
        try:
            results = ask()
        except (NotReady, DeadlineExceeded, Overloaded, InternalError, ChannelError) as err:
            self.judge(err, header)
            return [self.answer(model, fields) for fields in items]
        return self.settle(model, items, results)

    async def call_many_async(
        self, model: str, items: Sequence[Mapping[str, Any]], header: np.void, ask: Callable[[], Awaitable[list[Any]]]
    ) -> list[Any]:
        """As ``call_many``, awaiting ``ask()``."""
        if self.blocked(header):
            return [self.answer(model, fields) for fields in items]
        try:
            results = await ask()
        except (NotReady, DeadlineExceeded, Overloaded, InternalError, ChannelError) as err:
            self.judge(err, header)
            return [self.answer(model, fields) for fields in items]
        return self.settle(model, items, results)

    def snapshot(self) -> dict[str, Any]:
        return {**asdict(self.stats), "state": self.state.name.lower(), "last_error": self.last_error}


__all__ = ["Breaker", "BreakerStats", "Fallback", "State"]
