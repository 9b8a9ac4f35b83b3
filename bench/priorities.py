"""``python -m bench priorities [--quick] [--json PATH]``: a paced high-priority channel beside a flood.

A real ``shmd serve --no-http`` with channels ``hi`` (priority 3) and ``lo`` (priority 0).
``hi`` is the C client (``bench/c/pace.c``) asking one workload prediction every 1 ms
(1,000 requests/s, cache bypassed), timed per round trip; ``lo`` is a Python client
keeping its SQ full of threat requests (cache bypassed): more than the daemon can
answer. Measured in the same run, each on a fresh daemon:

- ``unloaded``: ``hi`` alone (the baseline of the target);
- ``flood_alone``: ``lo`` alone, its answers per second (the daemon's capacity for it);
- ``loaded``: both at once: ``hi``'s latency and ``lo``'s answers per second (its progress);

for the priorities above and, as the contrast, for equal priorities (both 1), where
the flood fills every pass. Target (issue 14): loaded ``hi`` p99 <= 2x unloaded p99
with priorities, and ``lo`` still answered.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

import ringbuf
from bench._stats import cli, ratio, summarize, table, target, verdict

GAP_NS = 1_000_000  # hi: 1,000 requests/s
CONFIGS = {"priorities": "hi=3,lo=0", "equal": "hi=1,lo=1"}


def _flood(prefix: str, channel: str, seconds: float) -> tuple[int, float]:
    """Keep ``channel``'s SQ full of threat requests (cache bypassed) for ``seconds``: (answered, seconds)."""
    from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUEST, REQUESTS, ModelId
    from shmd._codec import encode_payload
    from shmd.client import Client
    from shmd.samples import THREAT

    model = ModelId.THREAT
    with Client(channel, prefix, timeout=10) as c:
        recs = np.zeros(c.channel.sq.capacity, REQUESTS[model])
        recs["payload"] = encode_payload(model, THREAT)
        recs["model_id"], recs["abi_version"] = model, ABI_VERSION
        recs["payload_len"], recs["flags"] = PAYLOADS[model].itemsize, REQ_NO_CACHE
        answered = 0
        t0 = time.monotonic()
        end = t0 + seconds
        free = len(recs)
        while time.monotonic() < end:
            if free:
                recs["request_id"][:free] = c.new_ids(free)
                free -= c.submit(recs[:free].view(REQUEST))
            c.wait(0.05)  # sleeps (no CPU) until the daemon answers some
            got = len(c.reap())
            answered += got
            free += got
        wall = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while c.outstanding and time.monotonic() < deadline:  # let the daemon drain before detaching
            c.wait(0.05)
            c.reap()
    return answered, wall


def _pool_ready() -> int:
    import shmd.client  # noqa: F401

    return 0


def _hi(driver: Any, prefix: str, n: int, daemon_pid: int) -> dict[str, Any]:
    from bench.native import _request_bytes
    from bench.pace import _c_run

    budget_s = n * GAP_NS / 1e9 * 2 + 2
    raw = _c_run(driver, ["shmd", prefix, "hi", "miss", str(GAP_NS), str(n), str(int(budget_s * 1000)),
                          str(daemon_pid)], _request_bytes(), budget_s)  # fmt: skip
    return {"latency_us": summarize(raw["samples_ns"] / 1000.0), "n": raw["n"], "skipped_slots": raw["skipped"]}


def _one_config(priorities: str, n: int, pool: ProcessPoolExecutor, driver: Any) -> dict[str, Any]:
    from bench.daemon import _start_daemon

    prefix = f"bp{secrets.token_hex(3)}"
    proc, _ = _start_daemon(prefix, "hi,lo", "--priorities", priorities)
    try:
        seconds = n * GAP_NS / 1e9
        out: dict[str, Any] = {"unloaded": _hi(driver, prefix, n, proc.pid)}
        answered, wall = pool.submit(_flood, prefix, "lo", seconds).result(timeout=seconds + 60)
        out["flood_alone"] = {"lo_answers_per_s": answered / wall}
        flood: Future = pool.submit(_flood, prefix, "lo", seconds + 1.5)
        time.sleep(0.5)  # the flood is on
        out["loaded"] = _hi(driver, prefix, n, proc.pid)
        answered, wall = flood.result(timeout=seconds + 60)
        out["loaded"]["lo_answers_per_s"] = answered / wall
        out["loaded"]["lo_share_of_alone"] = ratio(answered / wall, out["flood_alone"]["lo_answers_per_s"])
        out["p99_ratio_loaded_to_unloaded"] = ratio(
            out["loaded"]["latency_us"]["p99"], out["unloaded"]["latency_us"]["p99"]
        )
        return out
    finally:
        proc.terminate()
        proc.wait(30)
        ringbuf.remove_leftovers(prefix)


def run(quick: bool) -> dict[str, Any]:
    from bench.pace import build_driver

    n = 500 if quick else 3000
    driver = build_driver()
    with ProcessPoolExecutor(1) as pool:
        pool.submit(_pool_ready).result()
        runs = {name: _one_config(prio, n, pool, driver) for name, prio in CONFIGS.items()}
    p = runs["priorities"]
    return {
        "conditions": {"hi_rate_per_s": 1e9 / GAP_NS, "requests_per_run": n, "quick": quick,
                       "hi": "C client, workload, cache bypassed", "lo": "Python client, threat, SQ kept full"},
        "runs": runs,
        "targets": {
            "hi_p99_within_2x_unloaded": target(p["p99_ratio_loaded_to_unloaded"], "<=", 2.0),
            "lo_progresses": target(p["loaded"]["lo_answers_per_s"], ">", 0.0),
        },
    }  # fmt: skip


def report(r: dict[str, Any]) -> str:
    rows = []
    for name, run_ in r["runs"].items():
        for phase in ("unloaded", "loaded"):
            s = run_[phase]["latency_us"]
            lo = run_[phase].get("lo_answers_per_s", float("nan"))
            rows.append([name, phase, s["median"], s["p99"], s["p999"], s["max"], lo])
        rows.append([name, "flood alone", "", "", "", "", run_["flood_alone"]["lo_answers_per_s"]])
        rows.append([name, "p99 loaded / unloaded", run_["p99_ratio_loaded_to_unloaded"], "", "", "", ""])
    lines = [table(["daemon", "hi at 1,000/s", "p50 us", "p99 us", "p99.9 us", "max us", "lo answers/s"], rows)]
    lines += [f"{k}: {verdict(t)}" for k, t in r["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench priorities", __doc__.splitlines()[0], run, report,
               "500 paced requests per phase instead of 3,000")  # fmt: skip
