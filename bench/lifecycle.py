"""``python -m bench lifecycle [--quick] [--json PATH]``: model swaps under load, and the first request after ready.

One daemon (HTTP shim with one worker, channels ``c`` and ``py``) on a copy of the shipped
repository plus a version 2 of ``workload`` (version 1's files under a new manifest):

- first request after ``event=ready``: one HTTP prediction on a fresh connection and one
  over a channel (``Client`` attached first, attach not timed), then the warm p99 of 300
  more of each: targets first <= 10 ms and <= 2x warm p99;
- swaps v1 <-> v2 (``POST /api/ml/models/workload/load``) while a C client
  (``shmd_roundtrip versions``, paced 200 us), a Python client (paced 500 us) and an HTTP
  client (its own connection, paced 2 ms) call without cache (``[cache.workload]`` off),
  each in a process of its own: time from load request to answer and the daemon's own
  request-to-swap time, each caller's p99 from a load request to 100 ms after its answer
  beside its p99 the rest of the time (target <= 2x);
- the daemon's RSS steady, at its peak while a load runs (two versions resident), after,
  and its loader process's (spawned at the first load).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._stats import cli, fmt, ratio, summarize, table, target
from .daemon import wait_ready

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "kernel_abi" / "c" / "build" / "shmd_roundtrip"
WINDOW_NS = 100_000_000  # a caller's call within this of a swap counts as "during"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, dict]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _repo(tmp: Path) -> Path:
    from models import default_models_dir

    repo = tmp / "models"
    shutil.copytree(default_models_dir(), repo)
    shutil.copytree(repo / "workload" / "1", repo / "workload" / "2")
    path = repo / "workload" / "2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["version"] = 2
    path.write_text(json.dumps(manifest))
    # No cache for workload: every call of the callers below runs the model version serving.
    (tmp / "shmd.toml").write_text("[model_versions]\nworkload = 1\n\n[cache.workload]\nenabled = false\n")
    return repo


def _start(tmp: Path, prefix: str, port: int) -> tuple[subprocess.Popen, float]:
    log = open(tmp / "daemon.log", "w+b")  # noqa: SIM115 -- lives as long as the daemon
    argv = [sys.executable, "-m", "shmd.cli", "serve", "--prefix", prefix, "--channels", "c,py", "--port", str(port),
            "--http-workers", "1", "--models-dir", str(tmp / "models"), "--config", str(tmp / "shmd.toml")]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, tmp / "daemon.log")
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc, time.monotonic() - t0


def _first_and_warm(prefix: str, port: int, n: int) -> dict[str, Any]:
    from shmd import samples
    from shmd.client import Client

    body = samples.WORKLOAD
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    status, _ = _post(conn, "/api/ml/predict/workload", body)
    http_first = (time.perf_counter() - t0) * 1e3
    assert status == 200
    client = Client("py", prefix, timeout=10)
    t0 = time.perf_counter()
    client.predict("workload", body, no_cache=True)
    channel_first = (time.perf_counter() - t0) * 1e3
    http_warm, channel_warm = [], []
    for i in range(n):
        item = {**body, "currentCpu": (i % 90) / 100}
        t0 = time.perf_counter()
        _post(conn, "/api/ml/predict/workload", item)
        http_warm.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        client.predict("workload", item, no_cache=True)
        channel_warm.append((time.perf_counter() - t0) * 1e3)
    client.close()
    conn.close()
    return {"http_first_ms": http_first, "channel_first_ms": channel_first,
            "http_warm_ms": summarize(http_warm), "channel_warm_ms": summarize(channel_warm)}  # fmt: skip


def loader_pids(pid: int) -> list[int]:
    """The loader processes of daemon ``pid``: its multiprocessing children, of any of its threads."""
    children, found = [], []
    for task in Path(f"/proc/{pid}/task").iterdir():  # a thread's children: the loader thread spawns it
        try:
            children += (task / "children").read_text().split()
        except OSError:  # the thread exited meanwhile
            pass
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except OSError:  # exited meanwhile
            pass
    return found


def _loader_rss_kb(pid: int) -> int:
    total = 0
    for child in loader_pids(pid):
        try:
            total += _rss_kb(child)
        except OSError:  # exited meanwhile
            pass
    return total


def _caller(kind: str, prefix: str, port: int, pace_s: float, path: str, stop: Any, started: Any) -> None:
    """A paced caller in a process of its own (no GIL shared with the bench): ``t_ns latency_ns`` lines to ``path``."""
    from shmd import samples
    from shmd.client import Client

    calls = []
    client = Client(kind, prefix, timeout=10) if kind == "py" else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps(samples.WORKLOAD)
    while not stop.is_set():
        t0 = time.monotonic_ns()
        if client is not None:
            client.predict("workload", samples.WORKLOAD, no_cache=True)
        else:
            conn.request("POST", "/api/ml/predict/workload", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        calls.append((t0, time.monotonic_ns() - t0))
        if len(calls) == 1:
            started.wait(120)
        time.sleep(pace_s)
    Path(path).write_text("".join(f"{t} {lat}\n" for t, lat in calls))


def _swaps(prefix: str, port: int, pid: int, tmp: Path, n_swaps: int, steady_s: float) -> dict[str, Any]:
    from kernel_abi import ModelId
    from shmd import _records, samples

    (tmp / "req.bin").write_bytes(_records.build_requests(ModelId.WORKLOAD, [samples.WORKLOAD], submit_ns=0).tobytes())
    with open(tmp / "req.bin", "rb") as stdin, open(tmp / "c.out", "wb") as stdout:
        c = subprocess.Popen([str(TOOL), "versions", prefix, "c", "600"], stdin=stdin, stdout=stdout)
    context = multiprocessing.get_context("spawn")
    stop, started = context.Event(), context.Barrier(3)
    callers = [
        context.Process(target=_caller, args=(kind, prefix, port, pace_s, str(tmp / f"{kind}.out"), stop, started))
        for kind, pace_s in (("py", 0.0005), ("http", 0.002))
    ]
    for proc in callers:
        proc.start()
    started.wait(120)  # every caller has answered once (spawn and import take ~1 s)
    rss_peak, loader_peak = [0], [0]

    def sample_rss() -> None:
        while not stop.is_set():
            rss_peak[0] = max(rss_peak[0], _rss_kb(pid))
            loader_peak[0] = max(loader_peak[0], _loader_rss_kb(pid))
            time.sleep(0.002)

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    time.sleep(steady_s)
    rss_before = _rss_kb(pid)
    windows, elapsed_ms, swap_ms = [], [], []
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    for k in range(n_swaps):
        version = 2 if k % 2 == 0 else 1
        t0 = time.monotonic_ns()
        status, doc = _post(conn, "/api/ml/models/workload/load", {"version": version})
        t1 = time.monotonic_ns()
        assert status == 200 and doc["version"] == version, doc
        windows.append((t0, t1))
        elapsed_ms.append((t1 - t0) / 1e6)
        conn.request("GET", "/api/ml/models")
        models = json.loads(conn.getresponse().read())["models"]
        swap_ms.append(next(m for m in models if m["model"] == "workload")["lastLoad"]["swapMs"])
        time.sleep(steady_s)
    rss_after = _rss_kb(pid)
    stop.set()
    for proc in callers:
        proc.join(30)
    sampler.join(10)
    c.send_signal(signal.SIGTERM)
    c.wait(10)
    conn.close()
    rows = [line.split() for line in (tmp / "c.out").read_text().splitlines() if not line.startswith("stats")]
    c_calls = [(int(t) * 1000, int(lat) * 1000) for t, _, status, lat, src in rows if status == "0" and src == "daemon"]
    out: dict[str, Any] = {"load_request_to_answer_ms": summarize(elapsed_ms),
                           "load_request_to_swap_ms": summarize(swap_ms),  # seen by housekeeping -> swapped
                           "rss_kb": {"before": rss_before, "peak_during_loads": rss_peak[0], "after": rss_after,
                                      "loader_process_peak": loader_peak[0]},
                           "c_failed": len(rows) - len(c_calls)}  # fmt: skip
    calls_of = {"c": c_calls}
    for kind in ("py", "http"):
        lines = (tmp / f"{kind}.out").read_text().split()
        calls_of[kind] = [(int(t), int(lat)) for t, lat in zip(lines[::2], lines[1::2], strict=True)]
    for name, calls in calls_of.items():
        during = [lat / 1e6 for t, lat in calls if any(a <= t <= b + WINDOW_NS for a, b in windows)]
        steady = [lat / 1e6 for t, lat in calls if not any(a <= t <= b + WINDOW_NS for a, b in windows)]
        out[f"{name}_during_ms"], out[f"{name}_steady_ms"] = summarize(during), summarize(steady)
        # The slowest call of each swap's window: the first load also spawns the loader process.
        out[f"{name}_max_by_swap_ms"] = [
            round(max((lat / 1e6 for t, lat in calls if a <= t <= b + WINDOW_NS), default=0.0), 3) for a, b in windows
        ]
    return out


def run(quick: bool) -> dict[str, Any]:
    import secrets

    from ringbuf import remove_leftovers

    subprocess.run(["make", "-s", "-C", str(ROOT / "kernel_abi" / "c")], check=True, timeout=300)
    prefix = f"blc{secrets.token_hex(3)}"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _repo(tmp)
        proc, start_s = _start(tmp, prefix, port)
        try:
            first = _first_and_warm(prefix, port, 100 if quick else 300)
            swaps = _swaps(prefix, port, proc.pid, tmp, 4 if quick else 10, 0.5 if quick else 1.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            remove_leftovers(prefix)
    figures = {"start_to_ready_s": start_s, **first, **swaps}
    targets = {
        "http_first_le_10ms": target(first["http_first_ms"], "<=", 10.0),
        "http_first_le_2x_warm_p99": target(ratio(first["http_first_ms"], first["http_warm_ms"]["p99"]), "<=", 2.0),
        "channel_first_le_10ms": target(first["channel_first_ms"], "<=", 10.0),
        "channel_first_le_2x_warm_p99": target(
            ratio(first["channel_first_ms"], first["channel_warm_ms"]["p99"]), "<=", 2.0
        ),
        "c_p99_during_swap_le_2x_steady": target(
            ratio(swaps["c_during_ms"]["p99"], swaps["c_steady_ms"]["p99"]), "<=", 2.0
        ),
        "py_p99_during_swap_le_2x_steady": target(
            ratio(swaps["py_during_ms"]["p99"], swaps["py_steady_ms"]["p99"]), "<=", 2.0
        ),
        "http_p99_during_swap_le_2x_steady": target(
            ratio(swaps["http_during_ms"]["p99"], swaps["http_steady_ms"]["p99"]), "<=", 2.0
        ),
    }
    return {"figures": figures, "baselines": {"warm p99 (same run)": "http_warm_ms, channel_warm_ms",
                                              "steady p99 (same run)": "c_steady_ms, py_steady_ms"},
            "targets": targets}  # fmt: skip


def report(result: dict[str, Any]) -> str:
    f = result["figures"]
    rows = [
        ["start to event=ready (s)", fmt(f["start_to_ready_s"])],
        ["HTTP first / warm p50 / warm p99 (ms)",
         f"{fmt(f['http_first_ms'])} / {fmt(f['http_warm_ms']['median'])} / {fmt(f['http_warm_ms']['p99'])}"],
        ["channel first / warm p50 / warm p99 (ms)",
         f"{fmt(f['channel_first_ms'])} / {fmt(f['channel_warm_ms']['median'])} / {fmt(f['channel_warm_ms']['p99'])}"],
        ["load request -> answer p50 / max (ms)",
         f"{fmt(f['load_request_to_answer_ms']['median'])} / {fmt(f['load_request_to_answer_ms']['max'])}"],
        ["load request -> swap (daemon) p50 / max (ms)",
         f"{fmt(f['load_request_to_swap_ms']['median'])} / {fmt(f['load_request_to_swap_ms']['max'])}"],
        *([f"{name} p50 / p99 / p99.9 {when} (ms)",
           " / ".join(fmt(f[f"{key}_{part}_ms"][q]) for q in ("median", "p99", "p999"))]
          for name, key in (("C", "c"), ("Python", "py"), ("HTTP", "http"))
          for when, part in (("during swaps", "during"), ("steady", "steady"))),
        ["daemon RSS before / peak during loads / after (MB)",
         " / ".join(f"{f['rss_kb'][k] / 1024:.1f}" for k in ("before", "peak_during_loads", "after"))],
        ["loader process RSS peak (MB)", f"{f['rss_kb'].get('loader_process_peak', 0) / 1024:.1f}"],
    ]  # fmt: skip
    rows += [[name, f"{fmt(t['value'])} {t['target']}: {'met' if t['met'] else 'MISSED'}"]
             for name, t in result["targets"].items()]  # fmt: skip
    return table(["what", "value"], rows)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench lifecycle", __doc__.splitlines()[0], run, report,
               "4 swaps, 0.5 s apart, 100 warm calls")  # fmt: skip
