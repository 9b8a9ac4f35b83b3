"""``python -m bench http [--quick] [--json PATH]``: the HTTP shim under load, against a bare aiohttp endpoint.

Starts ``shmd serve`` (with its shim) on a free loopback port and, in another
process, a bare aiohttp endpoint that parses the same JSON and returns a
constant. Both are driven in the same run by the same aiohttp load
generator: c=1 sequential latency, c=16 and c=64 throughput for single
predictions, and the latency of a batch of 100. Bodies rotate over distinct
feature sets so most requests miss the result cache (real inference).

Every loop is bounded in request count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from shmd.samples import WORKLOAD as SEED_WORKLOAD

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
N_BODIES = 2048  # distinct bodies cycled through: far more than fit one TTL window at these rates



def _bodies(n: int) -> list[bytes]:
    return [json.dumps({**SEED_WORKLOAD, "agentId": f"agent-{i}", "currentCpu": (i % 1000) / 1000}).encode()
            for i in range(n)]  # fmt: skip


def _batch_bodies(n: int, size: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "features": [
                    {**SEED_WORKLOAD, "agentId": f"b{j}-{i}", "currentCpu": (i % 100) / 100} for i in range(size)
                ]
            }
        ).encode()
        for j in range(n)
    ]


# --- the bare endpoint (runs in its own process: ``python -m bench.http --bare PORT``) ----------


def _serve_bare(port: int) -> None:
    from aiohttp import web

    const = json.dumps({"success": True, "prediction": {"predictedCpu": 0.5, "predictedMemory": 1,
                        "predictedGpu": 0.5, "confidence": 0.5}, "latency_ms": 0.0})  # fmt: skip

    async def handle(request: web.Request) -> web.Response:
        json.loads(await request.read())  # the same parse the shim does
        return web.Response(text=const, content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/api/ml/predict/workload", handle)
    app.router.add_post("/api/ml/predict/workload/batch", handle)
    app.router.add_get("/health", lambda r: asyncio.sleep(0, web.Response(text="ok")))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} not up after {START_TIMEOUT_S}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# --- load generation -------------------------------------------------------------------------------


def _pcts(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s) * 1e6
    return {"p50_us": round(float(np.percentile(a, 50)), 1), "p99_us": round(float(np.percentile(a, 99)), 1)}


async def _run(url: str, bodies: list[bytes], concurrency: int, n: int, max_s: float) -> dict[str, Any]:
    """``n`` POSTs (stopping early after ``max_s``) from ``concurrency`` workers; latency and rate."""
    import aiohttp

    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    errors = 0
    next_i = 0
    stop_at = time.monotonic() + max_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_i, errors
            while next_i < n and time.monotonic() < stop_at:
                body = bodies[next_i % len(bodies)]
                next_i += 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "rps": round(len(lat) / elapsed, 1), **_pcts(lat)}


async def _suite(base: str, quick: bool) -> dict[str, Any]:
    single, batch = f"{base}/api/ml/predict/workload", f"{base}/api/ml/predict/workload/batch"
    bodies, batches = _bodies(N_BODIES), _batch_bodies(64, 100)
    scale = 1 if quick else 4
    await _run(single, bodies, 4, 300, 3.0)  # warm up: connections, caches, JIT
    out: dict[str, Any] = {}
    out["c1"] = await _run(single, bodies, 1, 1000 * scale, 2.5 * scale)
    out["c16"] = await _run(single, bodies, 16, 10_000 * scale, 2.5 * scale)
    out["c64"] = await _run(single, bodies, 64, 10_000 * scale, 2.5 * scale)
    out["batch100"] = await _run(batch, batches, 1, 100 * scale, 2.0 * scale)
    return out


def _ratios(shim: dict[str, Any], bare: dict[str, Any]) -> dict[str, float]:
    def r(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    return {
        "c1_p50_latency_x": r(shim["c1"]["p50_us"], bare["c1"]["p50_us"]),
        "c1_p99_latency_x": r(shim["c1"]["p99_us"], bare["c1"]["p99_us"]),
        "c16_throughput_fraction": r(shim["c16"]["rps"], bare["c16"]["rps"]),
        "c64_throughput_fraction": r(shim["c64"]["rps"], bare["c64"]["rps"]),
        "batch100_p50_latency_x": r(shim["batch100"]["p50_us"], bare["batch100"]["p50_us"]),
    }


def _table(shim: dict[str, Any], bare: dict[str, Any], ratios: dict[str, float]) -> str:
    rows = [f"{'case':<10} {'who':<5} {'req':>6} {'err':>4} {'req/s':>9} {'p50 µs':>9} {'p99 µs':>9}"]
    for case in ("c1", "c16", "c64", "batch100"):
        for who, res in (("shim", shim), ("bare", bare)):
            f = res[case]
            rows.append(f"{case:<10} {who:<5} {f['requests']:>6} {f['errors']:>4} {f['rps']:>9.0f} "
                        f"{f['p50_us']:>9.0f} {f['p99_us']:>9.0f}")  # fmt: skip
    rows += [f"{k}: {v}" for k, v in ratios.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench http", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    p.add_argument("--json", type=Path, help="write the figures, baseline and ratios here")
    args = p.parse_args(argv)

    prefix = f"bh{os.getpid()}x{secrets.token_hex(3)}"
    shim_port, bare_port = _free_port(), _free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--port", str(shim_port),
         "--channels", "scheduler"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bare = subprocess.Popen([sys.executable, "-m", "bench.http", "--bare", str(bare_port)], cwd=ROOT)
    try:
        _wait_http(shim_port, daemon)
        _wait_http(bare_port, bare)
        # Interleaved order would be fairer to drifting machines; one after the other keeps it simple.
        shim_res = asyncio.run(_suite(f"http://127.0.0.1:{shim_port}", args.quick))
        bare_res = asyncio.run(_suite(f"http://127.0.0.1:{bare_port}", args.quick))
    finally:
        _stop(daemon)
        _stop(bare)
        from ringbuf import remove_leftovers

        remove_leftovers(prefix)
    ratios = _ratios(shim_res, bare_res)
    print(_table(shim_res, bare_res, ratios))
    if args.json:
        doc = {
            "benchmark": "http",
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "figures": shim_res,
            "baseline": bare_res,
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        _serve_bare(int(sys.argv[2]))
    else:
        sys.exit(main())
