"""The shim's channel (C client through ctypes): one submission per tick, answers in place, light process.

- requests gathered in one event-loop tick go out in one exchange, and each gets its own answer;
- requests that come while an exchange is out (the reaper thread waiting for it) go out together
  as soon as it is over;
- a daemon killed while the shim holds its channel is a NotReady at once, not after the timeout;
- a request alone in its worker (``alone``) is submitted at once and its inline answer returned
  without a turn of the event loop; the shim counts a connection alone only while no other is open;
- an early wake (``prewake``: a request is on its way) wakes a sleeping daemon, whose loop then
  spins for the request instead of sleeping again;
- a real ``shmd serve`` runs its shim workers without numba mapped and under 100 MB resident.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import ringbuf
from http_shim._channel import ShimChannel
from kernel_abi import RESPONSE, ModelId
from shmd import NotReady, _records
from shmd._loop import LOOP_EARLY_WAKES
from shmd._stats_segment import StatsSegment

from ._daemon import DaemonProcess
from ._http_daemon import Daemon, free_port, unique_prefix, valid

pytestmark = pytest.mark.timeout(180)


def _records_for(i: int) -> bytes:
    return _records.build_requests(ModelId.WORKLOAD, [valid("workload", i)], submit_ns=0, no_cache=True).tobytes()


def _answer(responses: bytes) -> np.void:
    (resp,) = np.frombuffer(responses, RESPONSE)
    return resp


def test_one_tick_is_one_exchange_and_each_request_gets_its_own_answer(prefix: str) -> None:
    with DaemonProcess(prefix, "--channels", "web"):
        channel = ShimChannel(prefix, "web", timeout=5.0)
        try:

            async def main() -> tuple[list, list]:
                alone = [_answer(await channel.exchange(_records_for(i))) for i in range(12)]  # one per tick
                together = await asyncio.gather(*(channel.exchange(_records_for(i)) for i in range(12)))
                return alone, [_answer(r) for r in together]

            alone, together = asyncio.run(main())
            assert channel.exchanges == 12 + 1 and channel.requests == 24
            outputs = [tuple(r["outputs"]) for r in alone]
            assert len(set(outputs)) == 12, "distinct items should get distinct predictions"
            assert [tuple(r["outputs"]) for r in together] == outputs  # item i's answer, in item i's place
            assert all(int(r["status"]) == 0 for r in together)
        finally:
            channel.close()


def test_requests_made_while_an_exchange_is_out_go_next_together(prefix: str) -> None:
    with DaemonProcess(prefix, "--channels", "web"):
        channel = ShimChannel(prefix, "web", timeout=5.0, spin_us=0)  # no waiting inline: the reaper always waits
        try:

            async def main() -> list[bytes]:
                first = [asyncio.ensure_future(channel.exchange(_records_for(i))) for i in range(6)]
                await asyncio.sleep(0)  # their first steps ran: the flush they scheduled runs next iteration...
                assert channel.exchanges == 0
                # ... and these six take their first steps right after it, in the same iteration (no I/O
                # polled in between), so the first six are surely out when these ask.
                later = [asyncio.ensure_future(channel.exchange(_records_for(i))) for i in range(6, 12)]
                await asyncio.sleep(0)
                assert channel.exchanges == 1
                return await asyncio.wait_for(asyncio.gather(*first, *later), 10.0)

            answers = [_answer(r) for r in asyncio.run(main())]
            assert channel.exchanges == 2 and channel.requests == 12
            assert all(int(r["status"]) == 0 for r in answers)
            assert len({tuple(r["outputs"]) for r in answers}) == 12
        finally:
            channel.close()


def test_a_request_alone_is_answered_without_a_turn_of_the_loop(prefix: str) -> None:
    """``alone``: submitted at once (not at the end of the tick) and, answered within the inline
    spin (here up to the 5 s timeout), returned before any other callback of the loop runs."""
    with DaemonProcess(prefix, "--channels", "web"):
        channel = ShimChannel(prefix, "web", timeout=5.0, spin_us=5_000_000)
        try:

            async def main() -> tuple[list[str], bytes, list[str], bytes]:
                turns: list[str] = []
                loop = asyncio.get_running_loop()
                loop.call_soon(turns.append, "turn")
                lone = await channel.exchange(_records_for(1), alone=True)
                seen_alone = list(turns)
                loop.call_soon(turns.append, "turn")
                tick = await channel.exchange(_records_for(1))  # flushed at the end of the tick
                return seen_alone, lone, list(turns), tick

            seen_alone, lone, seen_tick, tick = asyncio.run(main())
            assert seen_alone == [], "the loop turned before a request alone was answered"
            assert seen_tick == ["turn", "turn"], "a request not alone waits for the end of the tick"
            assert tuple(_answer(lone)["outputs"]) == tuple(_answer(tick)["outputs"])
            assert int(_answer(lone)["status"]) == 0
        finally:
            channel.close()


def test_a_connection_is_alone_only_while_no_other_is_open() -> None:
    """``Shim.alone`` on the transports of real loopback connections."""
    from http_shim._app import Shim

    async def main() -> list[bool]:
        server_ends: list[asyncio.StreamWriter] = []

        async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_ends.append(writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _ in range(100):  # bounded: both accepted within a few loop turns
            if len(server_ends) == 2:
                break
            await asyncio.sleep(0.01)
        shim = Shim("unused", "unused", admin_token=None, timeout=1.0)
        first, second = (w.transport for w in server_ends)
        seen = [shim.alone(first), shim.alone(second), shim.alone(first)]
        server_ends[1].close()
        seen.append(shim.alone(first))
        for _, w in clients:
            w.close()
        server_ends[0].close()
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(main()) == [True, False, False, True]


def test_a_killed_daemon_is_noticed_at_once(prefix: str) -> None:
    daemon = DaemonProcess(prefix, "--channels", "web")
    channel = ShimChannel(prefix, "web", timeout=30.0)
    try:
        daemon.stop(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(NotReady, match=r"^channel 'web': .*(not running|no daemon)"):
            asyncio.run(channel.exchange(_records_for(0)))
        assert time.monotonic() - t0 < 5.0, "waited for the timeout instead of checking the daemon"
    finally:
        channel.close()
        daemon.stop()
        ringbuf.remove_leftovers(prefix)  # a killed daemon leaves its segments (a restart would reuse them)


def _until_asleep_then_woken(channel: ShimChannel) -> None:
    """Call ``prewake`` until it finds the daemon asleep (and so wakes it)."""
    deadline = time.monotonic() + 30.0  # a sanity bound: the idle daemon sleeps within ~1 ms of its spin
    while not channel.prewake():
        assert time.monotonic() < deadline, "the idle daemon never went to sleep"
        time.sleep(0.001)


def test_an_early_wake_leaves_the_daemon_spinning_for_the_request_on_its_way(prefix: str) -> None:
    """A wake-up with no work (the shim's ``prewake``) makes the daemon's loop spin for its spin
    window (here 100 ms) before sleeping again: the request being parsed then finds it awake.
    Before, the loop went back to sleep at once and the request paid a second wake-up."""
    env = {"SHMD_SLEEP_TIMEOUT_MS": "10000"}  # no sleep ends by timeout here
    with DaemonProcess(prefix, "--channels", "web", "--spin-us", "100000", env=env):
        channel = ShimChannel(prefix, "web", timeout=5.0)
        seg = StatsSegment.attach(prefix)
        try:
            asyncio.run(channel.exchange(_records_for(0)))  # serving
            loop = seg.arrays["loop"]
            before = int(loop[LOOP_EARLY_WAKES])
            still_awake = []
            for _ in range(5):
                _until_asleep_then_woken(channel)
                time.sleep(0.02)  # past any re-sleep (~µs), well within the 100 ms spin
                still_awake.append(not channel.prewake())
            counted = int(loop[LOOP_EARLY_WAKES]) - before
        finally:
            seg.close()
            channel.close()
    # Each wake found no work and was counted (one that met the sleep's own end is not: hence >= 1).
    assert 1 <= counted <= 10, f"{counted} early wake-ups counted for 5 to 10 made"
    # The spin outlasts a 20 ms pause unless this process was held off the CPU for 80 ms: once is enough.
    assert any(still_awake), "the daemon slept again within 20 ms of an early wake-up, every time of 5"


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_shim_workers_are_light() -> None:
    d = Daemon(unique_prefix("lt"), port=free_port(), channels="scheduler",
               env={"SHMD_HTTP_WORKERS": "2"})  # fmt: skip
    try:
        import subprocess

        pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"http_shim --prefix {d.prefix} "],
                                               capture_output=True, text=True).stdout.split()]  # fmt: skip
        assert len(pids) == 2, pids
        for pid in pids:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "numba" not in maps and "llvmlite" not in maps, f"shim {pid} loaded numba"
            assert _status(pid, "VmRSS") < 100 * 1024, f"shim {pid} holds {_status(pid, 'VmRSS')} kB"
    finally:
        assert not d.stop(), "daemon left shared memory behind"
