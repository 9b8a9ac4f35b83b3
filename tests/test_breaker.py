"""The Python clients' circuit breaker against a real daemon that is stopped, killed and resumed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ringbuf import remove_leftovers
from shmd._errors import InvalidFields, NotReady
from shmd.client import AsyncClient, Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(180)

FIELDS = SAMPLES["threat"]
OPEN_BOUND_S = 0.5  # generous: an open breaker answers in microseconds; the client's timeout is 5 s


def rules(model: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"threatScore": 0.0, "rule": model}


@pytest.fixture
def daemon(prefix: str) -> Iterator[DaemonProcess]:
    with DaemonProcess(prefix, "--channels", "a") as d:
        yield d
        if d.proc.poll() is None:
            os.kill(d.pid, signal.SIGCONT)  # never leave it stopped


def test_stopped_daemon_trips_after_missed_deadlines_and_recovers(daemon: DaemonProcess) -> None:
    with Client("a", daemon.prefix, fallback=rules, trip_after=3, cooldown=0.3) as c:
        assert "fallback" not in c.predict("threat", FIELDS, deadline_ms=2000)
        os.kill(daemon.pid, signal.SIGSTOP)
        for _ in range(3):  # each waits for its deadline, then the fallback answers
            answer = c.predict("threat", FIELDS, deadline_ms=5)
            assert answer == {"threatScore": 0.0, "rule": "threat", "fallback": True}
        # Three missed deadlines trip it; on a loaded host a stale heartbeat may trip it sooner.
        misses = c.stats["deadline_misses"]
        assert c.stats["state"] == "open" and c.stats["trips"] == 1 and misses <= 3, c.stats
        for _ in range(20):  # open: answered at once, the rings untouched
            t0 = time.monotonic()
            assert c.predict("threat", FIELDS, deadline_ms=5)["fallback"] is True
            assert time.monotonic() - t0 < OPEN_BOUND_S
        assert c.stats["deadline_misses"] == misses, "an open breaker does not ask the daemon"
        time.sleep(0.35)
        assert c.predict("threat", FIELDS, deadline_ms=5)["fallback"] is True, "the probe misses: open again"
        assert c.stats["state"] == "open" and c.stats["trips"] == 2
        os.kill(daemon.pid, signal.SIGCONT)
        time.sleep(0.35)
        probe = c.predict("threat", FIELDS, deadline_ms=5000)
        assert "fallback" not in probe and probe["threatScore"] > 0, "the probe is answered: closed"
        s = c.stats
        assert (s["state"], s["recoveries"], s["fallback_answers"]) == ("closed", 1, 24)
        assert "unanswered after the deadline" in s["last_error"] or "heartbeat" in s["last_error"]
        with pytest.raises(InvalidFields):  # the caller's mistakes are not hidden behind the fallback
            c.predict("threat", dict(FIELDS, metrics={"errorRate": 7.0}))


def test_dead_daemon_trips_at_once(daemon: DaemonProcess) -> None:
    with Client("a", daemon.prefix, fallback=rules, trip_after=3, cooldown=60) as c:
        c.predict("threat", FIELDS)
        daemon.stop(signal.SIGKILL)
        t0 = time.monotonic()
        assert c.predict("threat", FIELDS, deadline_ms=20)["fallback"] is True
        assert time.monotonic() - t0 < OPEN_BOUND_S
        s = c.stats
        assert (s["state"], s["trips"], s["deadline_misses"]) == ("open", 1, 0), s
        assert f"daemon_pid={daemon.pid} is no process" in s["last_error"]
    remove_leftovers(daemon.prefix)  # a killed daemon unlinks nothing


def test_stopped_daemon_without_fallback_still_costs_the_timeout(daemon: DaemonProcess) -> None:
    """The breaker is opt-in: without a fallback the caller gets NotReady after its timeout."""
    with Client("a", daemon.prefix, timeout=0.2) as c:
        c.predict("threat", FIELDS)
        os.kill(daemon.pid, signal.SIGSTOP)
        with pytest.raises(NotReady):
            c.predict("threat", FIELDS, deadline_ms=5)
        assert "state" not in c.stats


def test_async_client_breaker(daemon: DaemonProcess) -> None:
    async def main() -> tuple[list[dict], dict]:
        async with AsyncClient("a", daemon.prefix, fallback=rules, trip_after=2, cooldown=60) as c:
            answers = [await c.predict("threat", FIELDS, deadline_ms=2000)]
            os.kill(daemon.pid, signal.SIGSTOP)
            for _ in range(5):
                t0 = time.monotonic()
                answers.append(await c.predict("threat", FIELDS, deadline_ms=5))
                assert time.monotonic() - t0 < OPEN_BOUND_S
            return answers, c.stats

    answers, stats = asyncio.run(main())
    assert "fallback" not in answers[0] and all(a["fallback"] for a in answers[1:])
    assert (stats["state"], stats["trips"], stats["fallback_answers"]) == ("open", 1, 5)
    assert stats["deadline_misses"] <= 2


def test_predict_many_is_behind_the_breaker_too(daemon: DaemonProcess) -> None:
    batch = [FIELDS, dict(FIELDS, timeSinceLastThreat=1.0)]
    fallback = {"threatScore": 0.0, "rule": "threat", "fallback": True}
    with Client("a", daemon.prefix, fallback=rules, trip_after=2, cooldown=60) as c:
        assert all("fallback" not in a for a in c.predict_many("threat", batch, deadline_ms=2000))
        with pytest.raises(InvalidFields) as err:  # the caller's mistakes are not hidden behind the fallback
            c.predict_many("threat", [FIELDS, dict(FIELDS, metrics={"errorRate": 7.0})])
        assert err.value.item == 1
        os.kill(daemon.pid, signal.SIGSTOP)
        for _ in range(2):  # each waits out its deadline (not the client's 5 s timeout), then the fallback answers
            t0 = time.monotonic()
            assert c.predict_many("threat", batch, deadline_ms=5) == [fallback, fallback]
            assert time.monotonic() - t0 < OPEN_BOUND_S * 4
        misses = c.stats["deadline_misses"]
        assert c.stats["state"] == "open" and c.stats["trips"] == 1 and misses <= 2, c.stats
        assert c.predict_many("threat", batch, deadline_ms=5, return_exceptions=True) == [fallback, fallback]
        assert c.stats["deadline_misses"] == misses, "an open breaker does not ask the daemon"
        assert c.stats["fallback_answers"] == 6


def test_async_predict_many_is_behind_the_breaker_too(daemon: DaemonProcess) -> None:
    async def main() -> tuple[list[list[dict]], dict]:
        async with AsyncClient("a", daemon.prefix, timeout=0.3, fallback=rules, trip_after=1, cooldown=60) as c:
            answers = [await c.predict_many("threat", [FIELDS, FIELDS])]
            os.kill(daemon.pid, signal.SIGSTOP)
            answers.append(await c.predict_many("threat", [FIELDS, FIELDS]))  # NotReady after 0.3 s: trips
            t0 = time.monotonic()
            answers.append(await c.predict_many("threat", [FIELDS]))
            assert time.monotonic() - t0 < OPEN_BOUND_S
            return answers, c.stats

    answers, stats = asyncio.run(main())
    assert all("fallback" not in a for a in answers[0]) and all(a["fallback"] for a in answers[1] + answers[2])
    assert (stats["state"], stats["trips"], stats["fallback_answers"]) == ("open", 1, 3), stats
