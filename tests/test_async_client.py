"""AsyncClient under concurrency: the event-loop poller and the reaper thread hand the ring over cleanly."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest

import ringbuf
from shmd.client import AsyncClient, Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(180)

ROUNDS = 250  # per task: enough hand-overs that a race between poller and reaper shows


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    prefix = f"a{os.getpid()}x{secrets.token_hex(3)}"
    with DaemonProcess(prefix, "--channels", "a,b") as proc:
        yield proc
    assert not ringbuf.remove_leftovers(prefix)


@pytest.mark.parametrize("poll_us", [200.0, 2.0, 0.0])
def test_many_tasks_all_answered_across_hand_overs(daemon: DaemonProcess, poll_us: float) -> None:
    # poll_us 2 and 0 hand the ring to the reaper thread on almost every wait:
    # the two must never read it at once (a shared consumer state would go corrupt).
    async def main() -> tuple[list[float], AsyncClient]:
        client = AsyncClient("a", daemon.prefix, poll_us=poll_us)

        async def task(k: int) -> list[float]:
            out = []
            for i in range(ROUNDS):
                fields = dict(SAMPLES["workload"], currentCpu=((k * 40 + i) % 997) / 997)
                out.append((await client.predict("workload", fields))["predictedCpu"])
            return out

        results = await asyncio.gather(*(task(k) for k in range(32)))
        return [x for r in results for x in r], client

    values, client = asyncio.run(main())
    try:
        assert len(values) == 32 * ROUNDS and all(0 <= v <= 1 for v in values)
        assert not client._client._cq.corrupt and client._client.outstanding == 0
    finally:
        client.close()


def test_batches_and_singles_interleave(daemon: DaemonProcess) -> None:
    async def main() -> list[int]:
        async with AsyncClient("b", daemon.prefix) as client:
            singles = [client.predict("threat", SAMPLES["threat"]) for _ in range(20)]
            batches = [client.predict_many("failure", [SAMPLES["failure"]] * 300) for _ in range(3)]
            done = await asyncio.gather(*singles, *batches)
            return [len(d) if isinstance(d, list) else 1 for d in done]

    assert asyncio.run(main()) == [1] * 20 + [300] * 3


def test_predict_many_gives_each_item_its_own_answer(daemon: DaemonProcess) -> None:
    items = [dict(SAMPLES["workload"], currentCpu=x, agentId=f"async-{i}") for i, x in enumerate((0.05, 0.5, 0.95))]

    async def main() -> list[dict]:
        async with AsyncClient("b", daemon.prefix) as client:
            return await client.predict_many("workload", items)

    together = asyncio.run(main())
    with Client("b", daemon.prefix) as c:
        alone = [c.predict("workload", f) for f in items]
    assert len({p["predictedCpu"] for p in alone}) == 3, "the items must differ for this test to mean anything"
    assert [{k: v for k, v in p.items() if k != "cacheHit"} for p in together] == [
        {k: v for k, v in p.items() if k != "cacheHit"} for p in alone
    ]
