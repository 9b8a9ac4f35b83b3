"""``python -m bench soak --minutes N [--seed S] [--crash] [--json PATH]``: mixed load with random faults.

One ``shmd serve`` with its HTTP shim; C, Python and HTTP callers run throughout
(tests/_faults.py) while a fault is injected every 5-15 s, chosen at random:
SIGSTOP of the daemon (0.5-2 s), a client that stops reaping (1-3 s), a caller
killed mid-batch, a holder scribbling on a header word of its channel, and with
``--crash`` kill -9 and a restart. Reports answered / lost / duplicated / errors
by kind per caller, the daemon's RSS after the first minute and at the end, and
each caller's p99 per minute. ``tests/test_faults_soak.py`` runs 30 seconds of it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests._faults import Cluster, kill_caller_mid_batch, scribble_header, stall_reaping

from ._stats import table, write_json

RSS_EVERY_S = 5.0
SETTLE_S = 60.0  # RSS growth is counted from the first sample after this (caches, arenas, JIT warm)


def soak(seconds: float, seed: int = 0, *, crash: bool = False) -> dict[str, Any]:
    """Run the soak; every figure of the report."""
    rng = np.random.default_rng(seed)
    kinds = ["sigstop", "stall_reaping", "kill_caller_mid_batch", "scribble_header"] + (["kill9"] if crash else [])
    cluster = Cluster(f"sk{os.getpid()}x{secrets.token_hex(3)}")
    faults: list[dict[str, Any]] = []
    rss: list[tuple[float, int, int]] = []  # (t, daemon pid, KiB)
    try:
        callers = cluster.start_callers(seconds + 3600, timeout=30)
        try:
            callers.wait_started()
            t0 = time.monotonic()
            next_fault = t0 + rng.uniform(5, 15)
            next_rss = t0
            while (now := time.monotonic()) < t0 + seconds:
                if now >= next_rss:
                    rss.append((now - t0, cluster.pid, cluster.rss_kib()))
                    next_rss += RSS_EVERY_S
                if now >= next_fault and now < t0 + seconds - 3:
                    faults.append(_inject(cluster, str(rng.choice(kinds)), rng, now - t0))
                    next_fault = time.monotonic() + rng.uniform(5, 15)
                assert cluster.alive(), cluster.log()
                time.sleep(0.1)
            rss.append((time.monotonic() - t0, cluster.pid, cluster.rss_kib()))
            results = callers.finish()
        finally:
            callers.kill()
        alive = cluster.alive()
        log = cluster.log()
    finally:
        left = cluster.close()
    return _summary(seconds, seed, results, faults, rss, alive, log, left)


def _inject(cluster: Cluster, kind: str, rng: np.random.Generator, at: float) -> dict[str, Any]:
    t = time.monotonic()
    if kind == "sigstop":
        seconds = float(rng.uniform(0.5, 2.0))
        cluster.stop_for(seconds)
        detail: dict[str, Any] = {"stopped_s": seconds}
    elif kind == "stall_reaping":
        detail = stall_reaping(cluster.prefix, float(rng.uniform(1.0, 3.0)))
    elif kind == "kill_caller_mid_batch":
        detail = kill_caller_mid_batch(cluster.prefix)
    elif kind == "scribble_header":
        detail = scribble_header(cluster.prefix, rng)
    else:
        detail = {"down_s": cluster.kill9_and_restart()}
    return {"at_s": round(at, 1), "fault": kind, "took_s": round(time.monotonic() - t, 2), **detail}


def _fault_failures(f: dict[str, Any]) -> list[str]:
    """What went wrong in one fault's own accounting."""
    bad = []
    if f["fault"] == "stall_reaping" and not f["in_order"]:
        bad.append("the stalled client lost or reordered answers")
    if f["fault"] == "kill_caller_mid_batch" and not f["heir_got_only_its_own"]:
        bad.append("the next holder got the killed caller's answers")
    if f["fault"] == "scribble_header" and f["recovered_s"] is None:
        bad.append("the scribbled channel never became usable again")
    return bad


def _summary(seconds: float, seed: int, results: dict[str, dict[str, Any]], faults: list[dict[str, Any]],
             rss: list[tuple[float, int, int]], alive: bool, log: str, left: list[str]) -> dict[str, Any]:  # fmt: skip
    last_pid = rss[-1][1]
    mine = [(t, kib) for t, pid, kib in rss if pid == last_pid]  # the daemon that ran to the end
    settled = [(t, kib) for t, kib in mine if t >= SETTLE_S] or mine
    rss_start, rss_end = settled[0][1], mine[-1][1]
    expected = {"fallback"}  # the C client's rules answer while the daemon is stopped
    if any(f["fault"] == "kill9" for f in faults):
        expected |= {"ConnectionRefusedError", "RemoteDisconnected", "ConnectionResetError", "BrokenPipeError",
                     "http503"}  # fmt: skip
    errors = [(f"{k}:{e}", e, n) for k, r in results.items() for e, n in r.get("errors", {}).items()]
    unexpected = {what: n for what, e, n in errors if e not in expected}
    return {
        "seconds": seconds, "seed": seed, "daemon_alive": alive, "left_behind": left,
        "callers": results, "faults": faults,
        "fault_failures": [m for f in faults for m in _fault_failures(f)],
        "answered": sum(r.get("ok", 0) + r.get("fallback", 0) for r in results.values()),
        "lost": sum(r.get("lost", 0) for r in results.values()),
        "duplicated": sum(r.get("duplicated", 0) for r in results.values()),
        "unexpected_errors": unexpected,
        "rss_kib": {"start": rss_start, "start_at_s": settled[0][0], "end": rss_end,
                    "growth_pct": 100.0 * (rss_end - rss_start) / rss_start, "samples": rss},
        "p99_ms_by_minute": {k: r.get("p99_ms_by_minute") for k, r in results.items() if "p99_ms_by_minute" in r},
        "tracebacks_in_log": log.count("Traceback"),
    }  # fmt: skip


def report(s: dict[str, Any]) -> str:
    rows = [[k, r.get("calls", 0), r.get("ok", 0), r.get("fallback", 0), r.get("lost"), r.get("duplicated"),
             r.get("dropped", 0), ", ".join(f"{e}={n}" for e, n in sorted(r.get("errors", {}).items())) or "-"]
            for k, r in s["callers"].items()]  # fmt: skip
    lines = [table(["caller", "calls", "ok", "fallback", "lost", "dup", "dropped", "errors (told)"], rows)]
    counts: dict[str, int] = {}
    for f in s["faults"]:
        counts[f["fault"]] = counts.get(f["fault"], 0) + 1
    r = s["rss_kib"]
    lines += [
        f"faults injected: {counts}; failures: {s['fault_failures'] or 'none'}",
        f"answered {s['answered']}, lost {s['lost']}, duplicated {s['duplicated']}, "
        f"unexpected errors {s['unexpected_errors'] or 'none'}",
        f"daemon RSS {r['start']} KiB (at {r['start_at_s']:.0f} s) -> {r['end']} KiB: {r['growth_pct']:+.2f}%",
        "p99 ms per minute: "
        + "; ".join(f"{k} " + " ".join(f"{v:.1f}" for v in p) for k, p in s["p99_ms_by_minute"].items()),
        f"daemon alive at the end: {s['daemon_alive']}; tracebacks in its log: {s['tracebacks_in_log']}; "
        f"left in /dev/shm: {s['left_behind']}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    p.add_argument("--quick", action="store_true", help="one minute")
    p.add_argument("--seed", type=int, default=0, help="fault schedule seed (default 0)")
    p.add_argument("--crash", action="store_true", help="also kill -9 and restart the daemon (RSS then covers "
                   "the last daemon only)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write the figures as one JSON object")
    args = p.parse_args(argv)
    result = soak(60.0 if args.quick else args.minutes * 60, args.seed, crash=args.crash)
    print(report(result))
    if args.json:
        write_json(Path(args.json), result)
    ok = (result["lost"], result["duplicated"]) == (0, 0) and result["daemon_alive"]
    ok = ok and not result["fault_failures"] and not result["unexpected_errors"]
    return 0 if ok else 1
