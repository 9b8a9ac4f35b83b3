"""The clients' edge cache against a live daemon: local answers, the daemon's TTLs, invalidation by generation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from kernel_abi import ABI_VERSION, PAYLOADS, REQUESTS, RESP_CACHE_HIT, RESP_LOCAL, ModelId
from shmd import _codec, _metrics
from shmd._stats_segment import CMD_CLEAR_CACHE, DONE, StatsSegment
from shmd.client import AsyncClient, Client
from shmd.samples import SAMPLES

from ._daemon import DaemonProcess
from .test_native import C_DIR, SAN_ENV

pytestmark = pytest.mark.timeout(180)

# failure's cache is off: the client must not cache it either; workload's outlives a slow clear;
# memory's goes from 50 ms to 400 ms, so that on a loaded machine the next call still comes within it
CONFIG = ("[cache.failure]\nttl_ms = 1000\nenabled = false\n[cache.workload]\nttl_ms = 60000\n"
          "[cache.memory]\nttl_ms = 400\n")  # fmt: skip


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    cfg = Path(tmp_path_factory.mktemp("edge")) / "shmd.toml"
    cfg.write_text(CONFIG)
    with DaemonProcess(f"ec{os.getpid()}", "--channels", "a,b", "--config", str(cfg)) as d:
        yield d


def _fresh(name: str, salt: float) -> dict:
    """Sample fields no earlier request used (the daemon's cache has no answer for them)."""
    fields = dict(SAMPLES[name])
    key = {"threat": "timeSinceLastThreat", "workload": "currentMemory", "memory": "localityScore"}[name]
    fields[key] = salt if name != "workload" else int(salt * 1e6)
    return fields


def _clear(prefix: str, model: int = 0) -> None:
    seg = StatsSegment.attach(prefix)
    try:
        seq = seg.command(CMD_CLEAR_CACHE, model)
        deadline = time.monotonic() + 10
        while seg.arrays["control"][DONE] != seq:
            assert time.monotonic() < deadline, "daemon did not run the cache clear"
            time.sleep(0.005)
    finally:
        seg.close()


def _requests(prefix: str, mid: ModelId) -> int:
    seg = StatsSegment.attach(prefix)
    try:
        return int(seg.arrays["model"][mid, _metrics.REQUESTS])
    finally:
        seg.close()


def test_repeat_is_answered_locally_without_reaching_the_daemon(daemon: DaemonProcess) -> None:
    fields = _fresh("threat", 1234.5)
    with Client("a", daemon.prefix, edge_cache=64) as c:
        ttl = c.channel.header["cache_ttl_ns"]
        assert ttl[ModelId.THREAT] == 500_000_000 and ttl[ModelId.FAILURE] == 0, "the daemon's TTLs, published"
        first = c.predict("threat", fields)
        before = _requests(daemon.prefix, ModelId.THREAT)
        second = c.predict("threat", fields)
        assert _requests(daemon.prefix, ModelId.THREAT) == before, "a local hit never reaches the daemon"
        assert first["cacheHit"] is False and "local" not in first
        assert second["cacheHit"] is True and second["local"] is True
        assert {k: v for k, v in second.items() if k not in ("cacheHit", "local")} == {
            k: v for k, v in first.items() if k != "cacheHit"
        }
        second["threatScore"] = -1.0  # the caller's copy: the cache keeps its own
        assert c.predict("threat", fields)["threatScore"] == first["threatScore"]
        assert c.stats["local_hits"] == 2 and c.stats["local_misses"] == 1
        # The same values with another type are another request: 1 is not 1.0.
        assert "local" not in c.predict("threat", dict(fields, timeSinceLastThreat=1234.0))
        assert "local" not in c.predict("threat", dict(fields, timeSinceLastThreat=1234))
        assert "local" not in c.predict("threat", fields, no_cache=True), "NO_CACHE skips the local cache too"


def test_clear_invalidates_local_entries_of_that_model_only(daemon: DaemonProcess) -> None:
    threat, workload = _fresh("threat", 77.0), _fresh("workload", 77.0)
    with Client("a", daemon.prefix, edge_cache=64) as c:
        c.predict("threat", threat)
        c.predict("workload", workload)
        assert c.predict("threat", threat).get("local") and c.predict("workload", workload).get("local")
        _clear(daemon.prefix, int(ModelId.THREAT))
        again = c.predict("threat", threat)
        assert "local" not in again and again["cacheHit"] is False, "after a clear the daemon computes afresh"
        assert c.predict("workload", workload).get("local"), "another model's entries stay"
        assert c.predict("threat", threat).get("local"), "the fresh answer is kept under the new generation"
        _clear(daemon.prefix)  # all models
        assert "local" not in c.predict("workload", workload)


def test_entries_live_for_the_daemons_ttl_and_not_for_uncached_models(daemon: DaemonProcess) -> None:
    memory = _fresh("memory", 0.123)  # TTL 400 ms (CONFIG)
    with Client("b", daemon.prefix, edge_cache=64) as c:
        c.predict("memory", memory)
        assert c.predict("memory", memory).get("local")
        time.sleep(0.5)
        assert "local" not in c.predict("memory", memory), "expired with the daemon's TTL"
        c.predict("failure", SAMPLES["failure"])
        assert "local" not in c.predict("failure", SAMPLES["failure"]), "the daemon does not cache failure"


def test_answers_of_the_daemons_cache_are_not_kept(daemon: DaemonProcess) -> None:
    """Their age is unknown: keeping them could serve an answer older than the TTL."""
    fields = _fresh("threat", 4321.0)
    with Client("a", daemon.prefix) as plain:
        plain.predict("threat", fields)  # the daemon now has it cached
    with Client("a", daemon.prefix, edge_cache=64) as c:
        assert c.predict("threat", fields)["cacheHit"] is True
        assert len(c._edge) == 0 and "local" not in c.predict("threat", fields)


def test_bounded_and_plain_data_only(daemon: DaemonProcess) -> None:
    with Client("b", daemon.prefix, edge_cache=2) as c:
        for i in range(5):
            c.predict("threat", _fresh("threat", 9000.0 + i))
        assert c.stats["local_entries"] == 2
        assert c.predict("threat", _fresh("threat", 9004.0)).get("local"), "the newest entries stay"
        odd = MappingProxyType(SAMPLES["threat"])  # not plain data: no exact key
        assert c.predict("threat", odd)["threatScore"] >= 0 and c.predict("threat", odd).get("local") is None
        fields = _fresh("threat", 9100.0)
        assert c.predict("threat", fields)["cacheHit"] is False and c.predict("threat", fields).get("local")
        twin = dict(fields, historicalThreats=tuple(fields["historicalThreats"]))  # msgspec writes it as the list
        assert "local" not in c.predict("threat", twin), "a tuple field is not plain data: never served locally"
    with pytest.raises(ValueError, match="edge cache capacity"):
        Client("b", daemon.prefix, edge_cache=-1)


def test_async_client_serves_locally_too(daemon: DaemonProcess) -> None:
    fields = _fresh("threat", 555.0)

    async def main() -> tuple[dict, dict, int]:
        async with AsyncClient("b", daemon.prefix, edge_cache=8) as c:
            return await c.predict("threat", fields), await c.predict("threat", fields), c.stats["local_hits"]

    first, second, hits = asyncio.run(main())
    assert "local" not in first and second["local"] is True and hits == 1


def test_c_client_edge_cache_serves_locally_until_the_generation_changes(daemon: DaemonProcess, tmp_path: Path) -> None:
    """``shmd_roundtrip edge`` (ASan build): two calls, a cache clear while it is stopped, two more."""
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR), "asan"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"make asan failed:\n{proc.stdout}\n{proc.stderr}"
    mid = ModelId.THREAT
    record = np.zeros(1, REQUESTS[mid])
    record["payload"] = _codec.encode_payloads(mid, [_fresh("threat", 31337.0)])
    record["model_id"], record["abi_version"], record["payload_len"] = mid, ABI_VERSION, PAYLOADS[mid].itemsize
    request = tmp_path / "request.bin"
    request.write_bytes(record.tobytes())
    with request.open("rb") as stdin:
        tool = subprocess.Popen(
            [str(C_DIR / "build" / "asan" / "shmd_roundtrip"), "edge", daemon.prefix, "b", "64"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=SAN_ENV,
        )  # fmt: skip
    try:
        assert tool.stdout is not None
        lines = [tool.stdout.readline().decode() for _ in range(2)]  # printed before it stops itself
        deadline = time.monotonic() + 30
        while Path(f"/proc/{tool.pid}/stat").read_text().split()[2] != "T":
            assert time.monotonic() < deadline and tool.poll() is None, "the tool did not stop itself"
            time.sleep(0.01)
        _clear(daemon.prefix, int(mid))
        os.kill(tool.pid, signal.SIGCONT)
        out, err = tool.communicate(timeout=30)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 0, err.decode()
    lines += out.decode().splitlines()
    rows = [dict(kv.split("=") for kv in line.split()) for line in lines[:4]]
    local = str(RESP_CACHE_HIT | RESP_LOCAL)
    assert [(r["source"], r["flags"]) for r in rows] == [("0", "0"), ("2", local), ("0", "0"), ("2", local)], lines
    assert len({r["out0"] for r in rows}) == 1, "the same prediction throughout"
    assert lines[4] == "stats local_hits=2 local_misses=2 daemon=2", lines
