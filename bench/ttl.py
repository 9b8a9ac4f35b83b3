"""``python -m bench ttl [--quick] [--json PATH]``: adaptive vs fixed cache TTLs on data that drifts in phases.

A generator of ``AGENTS`` workload agents asks for every agent every ``TICK_MS``; its
phases alternate: *stable* (every agent's CPU and GPU figures stay put) and *volatile*
(each figure takes a random step of ``STEP`` every tick). The workload cache is
quantised (``QUANTUM``: nearby features share an entry, as a deployment that wants hits
on noisy telemetry would configure it), so a cached answer may be another feature
vector's: the longer it lives while the data drifts, the further off it is.

Every request is sent twice in the same tick: as is (answered by the cache or the
model) and with the NO_CACHE flag (always the model: the fresh answer, which never
touches the cache). Error of an answer: the largest ``|cached - fresh| / max(1, |fresh|)``
over its four outputs (the adaptive TTL's own stability rule). Two fresh daemons run
the same seeded generator one after the other: the seed's fixed TTL (workload 100 ms)
and the adaptive TTL (bounds 10 ms .. 1 s, tolerance 0.01). Per phase kind: hit rate,
mean and p99 error, share of answers off by more than the tolerance, and the TTL seen.

And the cost (``bench daemon``'s cache figures with a third daemon): batch-256
throughput at 0% hits with the cache off, on with fixed TTLs, and on with adaptive
TTLs (every miss then also looks for an expired entry to compare with), alternated.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import ringbuf
from bench._stats import cli, ratio, table

AGENTS = 128
TICK_MS = 5.0
STEP = 0.004  # a volatile figure's random step per tick (features are in [0, 1])
QUANTUM = 0.05
TOLERANCE = 0.01
CONFIG = f"""
[cache.workload]
quantum = {QUANTUM}
tolerance = {TOLERANCE}
"""
KINDS = {"fixed": [], "adaptive": ["--adaptive-ttl"]}


def _requests(rng: np.random.Generator) -> np.ndarray:
    from kernel_abi import ABI_VERSION, PAYLOADS, REQUESTS, ModelId
    from shmd._codec import encode_payload
    from shmd.samples import WORKLOAD

    model = ModelId.WORKLOAD
    recs = np.zeros(AGENTS, REQUESTS[model])
    recs["payload"] = encode_payload(model, WORKLOAD)
    p = recs["payload"]
    p["agent_hash"] = np.arange(AGENTS)
    for name in ("historical_cpu", "historical_gpu", "current_cpu", "current_gpu"):
        p[name] = rng.uniform(0.1, 0.9, p[name].shape)
    recs["model_id"], recs["abi_version"], recs["payload_len"] = model, ABI_VERSION, PAYLOADS[model].itemsize
    return recs


def _drift(recs: np.ndarray, rng: np.random.Generator) -> None:
    p = recs["payload"]
    for name in ("historical_cpu", "historical_gpu", "current_cpu", "current_gpu"):
        p[name] = np.clip(p[name] + rng.normal(0, STEP, p[name].shape), 0.0, 1.0)


def _collect(client: Any, ids: np.ndarray, deadline: float) -> np.ndarray:
    from kernel_abi import RESPONSE

    got: list[np.ndarray] = []
    n = 0
    while n < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - n} of {len(ids)} requests unanswered")
        client.wait(0.05)
        r = client.reap()
        got.append(r)
        n += len(r)
    out = np.concatenate(got) if got else np.zeros(0, RESPONSE)
    order = {int(i): k for k, i in enumerate(out["request_id"])}
    return out[[order[int(i)] for i in ids]]


def _drive(prefix: str, phases: list[tuple[str, float]], seed: int) -> dict[str, Any]:
    """Run the generator against the daemon on ``prefix``: per phase kind, errors, hits, TTLs."""
    from kernel_abi import REQ_NO_CACHE, REQUEST, ModelId
    from shmd._stats_segment import StatsSegment
    from shmd.client import Client, now_ns

    rng = np.random.default_rng(seed)
    recs = _requests(rng)
    both = np.zeros(2 * AGENTS, recs.dtype)  # as is, then the same with NO_CACHE (np.concatenate drops padding)
    both["flags"][AGENTS:] = REQ_NO_CACHE
    seg = StatsSegment.attach(prefix)
    ttl = seg.arrays["cache_ttl_ns"]
    per: dict[str, dict[str, list]] = {}
    with Client("gen", prefix, timeout=10) as c:
        for kind, seconds in phases:
            acc = per.setdefault(kind, {"err": [], "hit": [], "ttl_ms": []})
            start = time.monotonic()
            tick = 0
            while time.monotonic() - start < seconds:
                if kind == "volatile":
                    _drift(recs, rng)
                for half in (both[:AGENTS], both[AGENTS:]):
                    for field in ("payload", "model_id", "abi_version", "payload_len"):
                        half[field] = recs[field]
                both["request_id"] = c.new_ids(2 * AGENTS)
                both["submit_ns"] = now_ns()
                sent = c.submit(both.view(REQUEST))
                if sent != len(both):
                    raise RuntimeError(f"SQ full: {sent} of {len(both)} taken")
                out = _collect(c, both["request_id"], time.monotonic() + 10)
                cached, truth = out[:AGENTS], out[AGENTS:]
                ok = (cached["status"] == 0) & (truth["status"] == 0)
                if not ok.all():
                    raise RuntimeError(f"statuses {set(cached['status'].tolist() + truth['status'].tolist())}")
                diff = np.abs(cached["outputs"] - truth["outputs"]) / np.maximum(1.0, np.abs(truth["outputs"]))
                acc["err"].append(diff.max(axis=1))
                acc["hit"].append((cached["flags"] & 1).astype(bool))
                acc["ttl_ms"].append(ttl[ModelId.WORKLOAD] / 1e6)
                tick += 1
                time.sleep(max(0.0, start + tick * TICK_MS / 1000 - time.monotonic()))
    del ttl
    seg.close()
    result = {}
    for kind, acc in per.items():
        err, hit, t = np.concatenate(acc["err"]), np.concatenate(acc["hit"]), np.asarray(acc["ttl_ms"])
        result[kind] = {
            "answers": int(err.size),
            "hit_rate": float(hit.mean()),
            "error_mean": float(err.mean()),
            "error_p99": float(np.percentile(err, 99)),
            "error_max": float(err.max()),
            "over_tolerance": float((err > TOLERANCE).mean()),
            "ttl_ms": {"min": float(t.min()), "median": float(np.median(t)), "max": float(t.max())},
        }
    return result


def run(quick: bool) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    from bench.daemon import _cache_figures, _start_daemon

    phase_s = 1.0 if quick else 2.0
    phases = [("stable", phase_s), ("volatile", phase_s)] * (1 if quick else 3)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "shmd.toml"
        config.write_text(CONFIG)
        for kind, extra in KINDS.items():
            prefix = f"bt{secrets.token_hex(3)}"
            proc, _ = _start_daemon(prefix, "gen", "--config", str(config), *extra)
            try:
                runs[kind] = _drive(prefix, phases, seed=14)
            finally:
                proc.terminate()
                proc.wait(30)
                ringbuf.remove_leftovers(prefix)
    overall = {}
    for kind, r in runs.items():
        n = sum(p["answers"] for p in r.values())
        overall[kind] = {
            "hit_rate": sum(p["hit_rate"] * p["answers"] for p in r.values()) / n,
            "error_mean": sum(p["error_mean"] * p["answers"] for p in r.values()) / n,
            "over_tolerance": sum(p["over_tolerance"] * p["answers"] for p in r.values()) / n,
        }
    a, f = overall["adaptive"], overall["fixed"]
    with ProcessPoolExecutor(1) as pool:
        cost = _cache_figures(pool, f"btc{secrets.token_hex(2)}", "c0", 1.0 if quick else 3.0, adaptive=True)
    return {
        "cost": {k: v for k, v in cost.items() if k != "runs"},
        "conditions": {"agents": AGENTS, "tick_ms": TICK_MS, "step": STEP, "quantum": QUANTUM,
                       "tolerance": TOLERANCE, "phases": phases, "fixed_ttl_ms": 100.0,
                       "adaptive_bounds_ms": [10.0, 1000.0]},
        "runs": runs,
        "overall": overall,
        "ratios_adaptive_to_fixed": {k: ratio(a[k], f[k]) for k in a},
        "adaptive_wins": bool((a["hit_rate"] >= f["hit_rate"] and a["error_mean"] < f["error_mean"])
                              or (a["hit_rate"] > f["hit_rate"] and a["error_mean"] <= f["error_mean"])),
    }  # fmt: skip


def report(r: dict[str, Any]) -> str:
    rows = []
    for kind, per in r["runs"].items():
        for phase, p in per.items():
            t = p["ttl_ms"]
            rows.append([kind, phase, p["hit_rate"], p["error_mean"], p["error_p99"], p["over_tolerance"],
                         f"{t['min']:.0f}/{t['median']:.0f}/{t['max']:.0f}"])  # fmt: skip
        o = r["overall"][kind]
        rows.append([kind, "all", o["hit_rate"], o["error_mean"], "", o["over_tolerance"], ""])
    lines = [table(["TTL", "phase", "hit rate", "mean error", "p99 error", f"> {TOLERANCE}", "TTL ms min/med/max"],
                   rows)]  # fmt: skip
    lines.append(f"adaptive / fixed: {r['ratios_adaptive_to_fixed']}; adaptive wins: {r['adaptive_wins']}")
    c = r["cost"]
    lines.append(f"cache cost at 0% hits (batch-256 throughput vs cache off): fixed {c['zero_hit_cost']:.1%}, "
                 f"adaptive {c['zero_hit_cost_adaptive']:.1%}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench ttl", __doc__.splitlines()[0], run, report,
               "one stable and one volatile phase of 1 s instead of three of 2 s each")  # fmt: skip
