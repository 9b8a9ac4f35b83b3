"""``python -m bench native [--quick] [--json PATH]``: the C and Rust clients against a real daemon.

Figures (from ``kernel_abi/c/build/shmd_bench``, a C program on the C client library):

- single-request round trip through ``shmd_client_predict``, cache miss
  (``SHMD_REQ_NO_CACHE``: every request is inferred) and cache hit (the same request
  repeated), median and p99 of per-call times;
- sustained predictions/s through ``shmd_client_predict_batch`` with batches of 32
  and 256 (cache off).

The Rust client (``kernel_abi/rust/shmd-client``, its ``shmd_rs_tool bench``: the same
loop through ``Client::predict_batch``) gives the same figures on its own channel of the
same daemon, C and Rust alternating per figure; skipped when cargo is not installed.

The clients' own answers, beside the daemon round trips of the same run: an edge-cache
hit (``edge_cache_entries`` in C, ``Client(edge_cache=N)`` in Python: answered in the
client, no round trip), and the Python breaker's answers with the daemon SIGSTOPped
(``Client(fallback=...)``, 5 ms deadlines, one call per ms: once open it answers at
once; every cool-down a probe waits out its deadline).

Baselines measured in the same run: the Python client (``shmd.client.Client.predict``
in a loop, miss and hit, and batches of 256 through ``predict_many`` (dicts) and
``predict_records`` (numpy records), cache off) on the same daemon, and
the raw shared-memory ping-pong floor (``bench.ring._floor``, means of 64 round trips).
Every run is bounded by a count and a subprocess timeout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import ringbuf
from bench._stats import cli, ratio, summarize, table, target, verdict
from kernel_abi import ABI_VERSION, PAYLOADS, REQUESTS, ModelId

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "kernel_abi" / "c"
BENCH_BIN = C_DIR / "build" / "shmd_bench"
RUST_DIR = ROOT / "kernel_abi" / "rust" / "shmd-client"
RUST_BENCH = [str(RUST_DIR / "target" / "release" / "shmd_rs_tool"), "bench"]
RUN_TIMEOUT_S = 60.0


def build_c_client() -> None:
    """``make -C kernel_abi/c``: the C client library and its tools, as ``make native`` builds them."""
    make = subprocess.run(["make", "-s", "-C", str(C_DIR)], capture_output=True, text=True, timeout=180)
    if make.returncode != 0:
        raise RuntimeError(f"make -C {C_DIR} failed:\n{make.stdout}\n{make.stderr}")


def _request_bytes() -> bytes:
    """The seed's workload example as one raw request record (the C tool sets ids, flags, times)."""
    from shmd import _codec
    from shmd.samples import WORKLOAD

    rec = np.zeros(1, REQUESTS[ModelId.WORKLOAD])
    rec["payload"] = _codec.encode_payload(ModelId.WORKLOAD, WORKLOAD)
    rec["model_id"] = ModelId.WORKLOAD
    rec["abi_version"] = ABI_VERSION
    rec["payload_len"] = PAYLOADS[ModelId.WORKLOAD].itemsize
    return rec.tobytes()


def _c_bench(prefix: str, channel: str, mode: str, n: int, batch: int = 1,
             tool: tuple[str, ...] = (str(BENCH_BIN),)) -> tuple[np.ndarray, dict[str, int]]:
    """Run shmd_bench (or ``tool``: the same CLI); per-call (or per-batch) ns samples and its summary line's numbers."""
    args = [*tool, prefix, channel, mode, str(n)] + ([str(batch)] if mode == "batch" else [])
    proc = subprocess.run(args, input=_request_bytes(), capture_output=True, timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"shmd_bench {mode} failed ({proc.returncode}): {proc.stderr.decode()}")
    *lines, last = proc.stdout.decode().split("\n")[:-1]
    done = {k: int(v) for k, v in (kv.split("=") for kv in last.split()[1:])}
    return np.asarray([int(x) for x in lines], np.float64), done


def _py_rtt(prefix: str, channel: str, n: int, miss: bool, edge_cache: int = 0) -> list[float]:
    """Python client round trips (or edge-cache hits), µs per predict call."""
    from shmd.client import Client
    from shmd.samples import WORKLOAD

    # The edge cache keeps only answers the daemon computed: its run asks what the daemon has not cached.
    fields = dict(WORKLOAD, currentMemory=secrets.randbelow(2**40)) if edge_cache else WORKLOAD
    out = []
    with Client(channel, prefix, timeout=5, edge_cache=edge_cache) as c:
        for _ in range(100):
            c.predict("workload", fields, no_cache=miss)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            c.predict("workload", fields, no_cache=miss)
            out.append((time.perf_counter_ns() - t0) / 1000.0)
        if edge_cache and c.stats["local_hits"] < n:
            raise RuntimeError(f"edge-cache run answered locally {c.stats['local_hits']} of {n + 100} calls")
    return out


def _py_breaker(prefix: str, channel: str, daemon_pid: int, seconds: float) -> tuple[list[float], dict[str, Any]]:
    """Python predict with a fallback while the daemon is SIGSTOPped: µs per call (one per ms), the client's stats."""
    import signal

    from shmd.client import Client
    from shmd.samples import WORKLOAD

    out = []
    rules = lambda model, fields: {"predictedCpu": fields["currentCpu"]}  # noqa: E731
    with Client(channel, prefix, timeout=5, fallback=rules) as c:
        c.predict("workload", WORKLOAD)
        os.kill(daemon_pid, signal.SIGSTOP)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter_ns()
                c.predict("workload", WORKLOAD, deadline_ms=5)
                out.append((time.perf_counter_ns() - t0) / 1000.0)
                time.sleep(0.001)
        finally:
            os.kill(daemon_pid, signal.SIGCONT)
        return out, c.stats


def _py_stream(
    prefix: str, channel: str, n_batches: int, batch: int, records: bool
) -> tuple[list[float], float, float]:
    """Python client predict_many (dicts) or predict_records (numpy records): predictions/s per batch, overall,
    and the client's sleeps on its completion ring per batch (each one waits for a wake-up by the daemon)."""
    from shmd import _records
    from shmd.client import Client
    from shmd.samples import WORKLOAD

    items = [WORKLOAD] * batch
    recs = _records.build_requests(ModelId.WORKLOAD, items, submit_ns=0, no_cache=True)
    rates = []
    with Client(channel, prefix, timeout=5) as c:
        def once() -> None:
            if records:
                c.predict_records("workload", recs)
            else:
                c.predict_many("workload", items, no_cache=True)

        once()
        slept = c._cq.sleeps
        t_start = time.perf_counter()
        for _ in range(n_batches):
            t0 = time.perf_counter()
            once()
            rates.append(batch / (time.perf_counter() - t0))
        overall = n_batches * batch / (time.perf_counter() - t_start)
        sleeps = (c._cq.sleeps - slept) / n_batches
    return rates, overall, sleeps


def run(quick: bool) -> dict[str, Any]:
    from bench.daemon import _start_daemon
    from bench.ring import SPAWN, _floor

    build_c_client()
    cargo = shutil.which("cargo")
    if cargo:
        build = subprocess.run([cargo, "build", "--offline", "--quiet", "--release", "--bins"], cwd=RUST_DIR,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        if build.returncode != 0:
            raise RuntimeError(f"cargo build in {RUST_DIR} failed:\n{build.stderr}")
    clients = {"c": (str(BENCH_BIN),), **({"rust": tuple(RUST_BENCH)} if cargo else {})}
    scale = 1 if quick else 4
    n_c, n_py = 5_000 * scale, 2_000 * scale
    prefix = f"bn{os.getpid()}x{secrets.token_hex(3)}"
    fig: dict[str, Any] = {}
    base: dict[str, Any] = {}
    proc, _ = _start_daemon(prefix, "c,rust,py")
    try:
        for mode in ("miss", "hit"):
            for name, tool in clients.items():
                samples, done = _c_bench(prefix, name, mode, n_c, tool=tool)
                fig[f"{name}_rtt_{mode}_us"] = {**summarize(samples / 1000.0), "cache_hits": done["cache_hits"]}
        for batch, n_batches in ((32, 1_000 * scale), (256, 200 * scale)):
            for name, tool in clients.items():
                samples, done = _c_bench(prefix, name, "batch", n_batches, batch, tool=tool)
                fig[f"{name}_batch{batch}_per_s"] = {
                    **summarize(batch / (samples / 1e9)),
                    "overall": done["count"] * batch / (done["total_ns"] / 1e9),
                }
        samples, done = _c_bench(prefix, "c", "local", n_c)
        fig["c_local_us"] = {**summarize(samples / 1000.0), "cache_hits": done["cache_hits"]}
        base["py_rtt_miss_us"] = summarize(_py_rtt(prefix, "py", n_py, True))
        base["py_rtt_hit_us"] = summarize(_py_rtt(prefix, "py", n_py, False))
        fig["py_local_us"] = summarize(_py_rtt(prefix, "py", n_py, False, edge_cache=1024))
        open_us, breaker_stats = _py_breaker(prefix, "py", proc.pid, 1.0 if quick else 3.0)
        fig["py_breaker_stopped_us"] = {**summarize(open_us), **breaker_stats}
        for key, records in (("py_batch256_per_s", False), ("py_records256_per_s", True)):
            rates, overall, sleeps = _py_stream(prefix, "py", (200 if records else 50) * scale, 256, records)
            base[key] = {**summarize(rates), "overall": overall, "sleeps_per_batch": sleeps}
    finally:
        proc.terminate()
        proc.wait(30)
        ringbuf.remove_leftovers(prefix)
    floor_prefix = prefix + "f"
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
            floor_ns = _floor(pool, floor_prefix, 50_000 * scale)
    finally:
        ringbuf.remove_leftovers(floor_prefix)
    base["floor_rtt_us"] = summarize(np.asarray(floor_ns) / 1000.0)
    floor = base["floor_rtt_us"]["median"]
    ratios = {
        "c_miss_over_floor": ratio(fig["c_rtt_miss_us"]["median"], floor),
        "c_hit_over_floor": ratio(fig["c_rtt_hit_us"]["median"], floor),
        "py_miss_over_c_miss": ratio(base["py_rtt_miss_us"]["median"], fig["c_rtt_miss_us"]["median"]),
        "py_hit_over_c_hit": ratio(base["py_rtt_hit_us"]["median"], fig["c_rtt_hit_us"]["median"]),
        "c_local_over_c_hit": ratio(fig["c_local_us"]["median"], fig["c_rtt_hit_us"]["median"]),
        "py_local_over_py_hit": ratio(fig["py_local_us"]["median"], base["py_rtt_hit_us"]["median"]),
        "c_batch256_over_py_batch256": ratio(fig["c_batch256_per_s"]["overall"], base["py_batch256_per_s"]["overall"]),
        "py_records256_over_c_batch256": ratio(
            base["py_records256_per_s"]["overall"], fig["c_batch256_per_s"]["overall"]
        ),
    }
    if "rust" in clients:
        for key, stat in (("rtt_miss_us", "median"), ("rtt_hit_us", "median"), ("batch256_per_s", "overall")):
            ratios[f"rust_over_c_{key}"] = ratio(fig[f"rust_{key}"][stat], fig[f"c_{key}"][stat])
    targets = {
        "c_local_p50_us": target(fig["c_local_us"]["median"], "<=", 0.2),
        "py_local_p50_us": target(fig["py_local_us"]["median"], "<=", 3.0),
        "py_breaker_stopped_p99_us": target(fig["py_breaker_stopped_us"]["p99"], "<=", 6000.0),
    }
    return {"benchmark": "native", "quick": quick, "clients": list(clients), "figures": fig, "baselines": base,
            "ratios": ratios, "targets": targets}  # fmt: skip


def report(r: dict[str, Any]) -> str:
    f, b, x = r["figures"], r["baselines"], r["ratios"]
    lat = table(
        ["round trip (µs)", "median", "p99", "n", "note"],
        [
            ("C client, cache miss", f["c_rtt_miss_us"]["median"], f["c_rtt_miss_us"]["p99"],
             f["c_rtt_miss_us"]["n"], f"{x['c_miss_over_floor']:.1f}x floor"),
            ("C client, cache hit", f["c_rtt_hit_us"]["median"], f["c_rtt_hit_us"]["p99"],
             f["c_rtt_hit_us"]["n"], f"{x['c_hit_over_floor']:.1f}x floor"),
            *(
                (f"Rust client, cache {m}", f[f"rust_rtt_{m}_us"]["median"], f[f"rust_rtt_{m}_us"]["p99"],
                 f[f"rust_rtt_{m}_us"]["n"], f"{x[f'rust_over_c_rtt_{m}_us']:.2f}x C")
                for m in ("miss", "hit") if "rust" in r["clients"]
            ),
            ("C edge cache (local hit)", f["c_local_us"]["median"], f["c_local_us"]["p99"],
             f["c_local_us"]["n"], f"{x['c_local_over_c_hit']:.3f}x C hit"),
            ("Python client, cache miss", b["py_rtt_miss_us"]["median"], b["py_rtt_miss_us"]["p99"],
             b["py_rtt_miss_us"]["n"], f"{x['py_miss_over_c_miss']:.1f}x C"),
            ("Python client, cache hit", b["py_rtt_hit_us"]["median"], b["py_rtt_hit_us"]["p99"],
             b["py_rtt_hit_us"]["n"], f"{x['py_hit_over_c_hit']:.1f}x C"),
            ("Python edge cache (local hit)", f["py_local_us"]["median"], f["py_local_us"]["p99"],
             f["py_local_us"]["n"], f"{x['py_local_over_py_hit']:.3f}x Py hit"),
            ("floor: numba ping-pong (64-trip means)", b["floor_rtt_us"]["median"], b["floor_rtt_us"]["p99"],
             b["floor_rtt_us"]["n"], "1x"),
        ],
    )  # fmt: skip
    thr = table(
        ["sustained, cache off", "overall pred/s", "median pred/s", "p1 pred/s", "batches", "client sleeps/batch"],
        [
            (name, s["overall"], s["median"], s["p1"], s["n"], s.get("sleeps_per_batch", "-"))
            for name, s in (
                ("C predict_batch, 32", f["c_batch32_per_s"]),
                ("C predict_batch, 256", f["c_batch256_per_s"]),
                *((f"Rust predict_batch, {n}", f[f"rust_batch{n}_per_s"]) for n in (32, 256) if "rust" in r["clients"]),
                ("Python predict_many, 256 dicts", b["py_batch256_per_s"]),
                ("Python predict_records, 256", b["py_records256_per_s"]),
            )
        ],
    )
    return "\n".join([
        f"native benchmark ({'quick' if r['quick'] else 'full'}): workload model, one daemon, one client at a time",
        lat, "", thr, "",
        f"C batch-256 throughput = {x['c_batch256_over_py_batch256']:.1f}x the Python client's predict_many; "
        f"Python predict_records = {x['py_records256_over_c_batch256']:.2f}x C batch-256", "",
        "Python breaker, daemon SIGSTOPped, 5 ms deadlines, 1 call/ms: p50 {:.1f} µs, p99 {:.1f} µs, p99.9 {:.1f} µs, "
        "max {:.1f} µs over {} calls ({} misses, {} trips)".format(*(
            f["py_breaker_stopped_us"][k] for k in ("median", "p99", "p999", "max", "n", "deadline_misses", "trips"))),
        *(f"target {k}: {v['value']:.3g} {verdict(v)}" for k, v in r.get("targets", {}).items()),
    ])  # fmt: skip


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench native", __doc__.splitlines()[0], run, report, "fewer samples, < 40 s")



