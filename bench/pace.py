"""``python -m bench pace [--quick] [--json PATH]``: round trips at the pace callers really use.

Kernel subsystems ask a few hundred to a few thousand times a second, not back to
back. Every transport here sends one request every GAP (0 = back to back, 20 µs,
100 µs, 1 ms, 10 ms) on an absolute schedule (``clock_nanosleep`` TIMER_ABSTIME;
a slot missed because the previous round trip overran is skipped and counted, as
a periodic tick would) and times each round trip from just before the send:

- shmd through the C client (``shmd_client_predict``, ``bench/c/pace.c``) and the
  Python client (``Client.predict``, dict in, dict out), cache hit (one request
  repeated) and cache miss (the NO_CACHE request flag: every request is inferred),
  against a real ``shmd serve --no-http`` on its own prefix;
- baselines paced the same way in the same run, from the same C driver: a POSIX
  message-queue echo and a UNIX stream-socket echo with a forked child (both
  sides blocking); shmd's wake-up mechanism bare, a shared-futex echo on one
  32-bit word each way, and the same with the child sleeping in ``futex_waitv``
  on three words as the daemon does (one per channel: what a single doorbell
  word would save); and the raw spin floor (both sides spinning on shared memory);
  and the model's LiteRT batch-1 call, measured in this process.

Per gap and transport: p50/p99/p99.9/max, the ratios to the MQ echo at that gap,
and the CPU burnt per request by the client (getrusage) and by its peer (the
daemon or the echo child: its process CPU clock, all threads, over the same
loop). Each of issue 9's latency and CPU targets is recorded as met or missed.
With ``--json PATH`` a plot of p50 and p99 against the gap goes to PATH.png.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import resource
import secrets
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ringbuf
from bench._stats import cli, ratio, summarize, table

ROOT = Path(__file__).resolve().parent.parent
DRIVER_SRC = ROOT / "bench" / "c" / "pace.c"
C_DIR = ROOT / "kernel_abi" / "c"
BUILD_DIR = ROOT / "build" / "bench"

GAPS_US = (0, 20, 100, 1_000, 10_000)
SHMD = ("c_hit", "c_miss", "py_hit", "py_miss")  # figures: shmd through its clients
ECHO = ("mq_echo", "unix_echo", "futex_echo", "futexv_echo", "spin_floor")  # baselines from the C driver
TRANSPORTS = SHMD + ECHO
LABELS = {
    "c_hit": "C client, cache hit", "c_miss": "C client, cache miss",
    "py_hit": "Python client, cache hit", "py_miss": "Python client, cache miss",
    "mq_echo": "POSIX MQ echo", "unix_echo": "UNIX socket echo", "futex_echo": "futex echo (shm, 1 word)",
    "futexv_echo": "futex_waitv echo (shm, 3 words)", "spin_floor": "spin floor (shm)",
}  # fmt: skip
_DRIVER_MODE = {
    "mq_echo": "mq",
    "unix_echo": "sock",
    "futex_echo": "futex",
    "futexv_echo": "futexv",
    "spin_floor": "spin",
}
WARMUP, WARMUP_MAX_S = 200, 0.25  # unmeasured round trips before each run, bounded in time (as pace.c's)
SEQUENTIAL_TARGET_N = 50_000  # issue 9: maximum over at least this many round trips ...
SEQUENTIAL_MAX_US = 50_000.0  # ... at most 50 ms


@dataclass(frozen=True)
class Plan:
    """How much to measure: round trips per gap (µs -> count), and the time bound of each run."""

    counts: dict[int, int]
    budget_s: float
    model_calls: int


FULL = Plan({0: 30_000, 20: 15_000, 100: 8_000, 1_000: 2_000, 10_000: 300}, budget_s=12.0, model_calls=10_000)
QUICK = Plan({0: 3_000, 20: 1_500, 100: 800, 1_000: 200, 10_000: 30}, budget_s=3.0, model_calls=2_000)
SMOKE = Plan({0: 200, 20: 100, 100: 50, 1_000: 10, 10_000: 3}, budget_s=0.5, model_calls=200)  # the test's


# --- CPU clocks ---------------------------------------------------------------------


def process_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` (all threads) so far, in ns: its POSIX CPU-time clock.

    The clock id is glibc's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), what
    ``clock_getcpuclockid`` returns; 0 when the process is gone or ``pid`` is not positive
    (pid 0 would be this process's own clock).
    """
    if pid <= 0:
        return 0
    try:
        return time.clock_gettime_ns((~pid << 3) | 2)
    except OSError:
        return 0


def _self_cpu_ns() -> int:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return int((ru.ru_utime + ru.ru_stime) * 1e9)


# --- the C driver -------------------------------------------------------------------


def build_driver() -> Path:
    """Compile bench/c/pace.c against the C client library (built by its Makefile); cached by content."""
    from bench.native import build_c_client

    build_c_client()
    lib = C_DIR / "build" / "libshmd_client.a"
    inputs = [DRIVER_SRC, lib, C_DIR / "shmd_client.h", ROOT / "kernel_abi" / "include" / "shmd_abi.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in inputs)).hexdigest()[:16]
    binary = BUILD_DIR / f"pace-{digest}"
    if not binary.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".tmp{os.getpid()}")
        cmd = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{C_DIR}", f"-I{inputs[3].parent}",
               str(DRIVER_SRC), str(lib), "-lpthread", "-lrt", "-o", str(tmp)]  # fmt: skip
        cc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if cc.returncode != 0:
            raise RuntimeError(f"compiling {DRIVER_SRC} failed:\n{' '.join(cmd)}\n{cc.stderr}")
        tmp.replace(binary)
    return binary


def _c_run(driver: Path, args: list[str], stdin: bytes | None, budget_s: float) -> dict[str, Any]:
    """Run the C driver; its samples (ns) and summary numbers."""
    proc = subprocess.run([str(driver), *args], input=stdin, capture_output=True, timeout=budget_s + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"pace {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    *lines, last = proc.stdout.decode().split("\n")[:-1]
    out: dict[str, Any] = {k: int(v) for k, v in (kv.split("=") for kv in last.split()[1:])}
    out["samples_ns"] = np.asarray([int(x) for x in lines], np.int64)
    return out


# --- the Python client driver (runs in a pool process) -----------------------------------

_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _sleep_until(libc: ctypes.CDLL, ns: int) -> None:
    """clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ns): the C driver's pacing, from Python."""
    ts = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
    while libc.clock_nanosleep(time.CLOCK_MONOTONIC, _TIMER_ABSTIME, ctypes.byref(ts), None) == 4:  # EINTR
        pass


def _py_run(prefix: str, channel: str, miss: bool, gap_ns: int, n: int, budget_s: float, daemon_pid: int
            ) -> dict[str, Any]:  # fmt: skip
    """``Client.predict`` paced like pace.c's loop (same schedule, same summary numbers)."""
    from shmd.client import Client
    from shmd.samples import WORKLOAD

    libc = ctypes.CDLL(None, use_errno=True)
    samples = np.zeros(n, np.int64)
    done = skipped = slot = hits = 0
    with Client(channel, prefix, timeout=5) as c:
        warm_end = time.monotonic() + WARMUP_MAX_S
        for _ in range(WARMUP):
            c.predict("workload", WORKLOAD, no_cache=miss)
            if time.monotonic() > warm_end:
                break
        cpu0, peer0 = _self_cpu_ns(), process_cpu_ns(daemon_pid)
        start = time.monotonic_ns()
        end = start + int(budget_s * 1e9)
        while done < n:
            t0 = time.monotonic_ns()
            if t0 > end:
                break
            if gap_ns:
                k = max(-(-(t0 - start) // gap_ns), slot)  # the first slot not in the past
                skipped += k - slot
                slot = k + 1
                _sleep_until(libc, start + k * gap_ns)
                t0 = time.monotonic_ns()
            hits += c.predict("workload", WORKLOAD, no_cache=miss)["cacheHit"]
            samples[done] = time.monotonic_ns() - t0
            done += 1
        wall = time.monotonic_ns() - start
        cpu, peer = _self_cpu_ns() - cpu0, process_cpu_ns(daemon_pid) - peer0
    return {"n": done, "wall_ns": wall, "client_cpu_ns": cpu, "peer_cpu_ns": peer, "skipped": skipped,
            "hits": hits, "fallbacks": 0, "samples_ns": samples[:done]}  # fmt: skip


def _pool_ready() -> int:
    """Import the client in the pool process before anything is timed."""
    import shmd.client  # noqa: F401

    return os.getpid()


# --- measuring --------------------------------------------------------------------------


def _record(raw: dict[str, Any], shmd: bool) -> dict[str, Any]:
    n = max(raw["n"], 1)
    rec = {
        "latency_us": summarize(raw["samples_ns"] / 1000.0),
        "skipped_slots": raw["skipped"],
        "wall_s": raw["wall_ns"] / 1e9,
        "client_cpu_us_per_request": raw["client_cpu_ns"] / n / 1000.0,
        "peer_cpu_us_per_request": raw["peer_cpu_ns"] / n / 1000.0,
        "peer_cpu_fraction_of_core": raw["peer_cpu_ns"] / max(raw["wall_ns"], 1),
    }
    if shmd:
        rec["hit_rate"] = raw["hits"] / n
        rec["fallbacks"] = raw["fallbacks"]
    return rec


def _one(transport: str, gap_us: int, plan: Plan, driver: Path, pool: ProcessPoolExecutor, prefix: str,
         daemon_pid: int) -> dict[str, Any]:  # fmt: skip
    from bench.native import _request_bytes

    n, gap_ns = plan.counts[gap_us], gap_us * 1000
    common = [str(gap_ns), str(n), str(int(plan.budget_s * 1000))]
    if transport in ECHO:
        raw = _c_run(driver, [_DRIVER_MODE[transport], *common], None, plan.budget_s)
    elif transport.startswith("c_"):
        args = ["shmd", prefix, "c", transport[2:], *common, str(daemon_pid)]
        raw = _c_run(driver, args, _request_bytes(), plan.budget_s)
    else:
        fut = pool.submit(_py_run, prefix, "py", transport == "py_miss", gap_ns, n, plan.budget_s, daemon_pid)
        raw = fut.result(timeout=plan.budget_s + 60)
    return _record(raw, transport in SHMD)


def measure(plan: Plan, quick: bool) -> dict[str, Any]:
    """Every transport at every gap (interleaved, so drifting background load hits all alike)."""
    from bench.daemon import _model_call_us, _start_daemon
    from bench.ring import SPAWN

    driver = build_driver()
    prefix = f"bp{os.getpid()}x{secrets.token_hex(3)}"
    runs: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TRANSPORTS}
    with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
        ready = pool.submit(_pool_ready)  # imports while the daemon starts
        proc, _ = _start_daemon(prefix, "c,py")
        try:
            ready.result(timeout=120)
            for gap_us in GAPS_US:
                for transport in TRANSPORTS:
                    runs[transport][str(gap_us)] = _one(transport, gap_us, plan, driver, pool, prefix, proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            ringbuf.remove_leftovers(prefix)
    model = summarize(_model_call_us(plan.model_calls))
    result: dict[str, Any] = {
        "benchmark": "pace",
        "quick": quick,
        "gaps_us": list(GAPS_US),
        "plan": {"counts": {str(k): v for k, v in plan.counts.items()}, "budget_s": plan.budget_s},
        "figures": {t: runs[t] for t in SHMD},
        "baselines": {**{t: runs[t] for t in ECHO}, "model_batch1_call_us": model},
    }
    result["ratios"] = _ratios(runs)
    result["sequential_max"] = _sequential_max(runs)
    result["targets"] = _targets(runs, model["median"], result["sequential_max"])
    return result


def run(quick: bool) -> dict[str, Any]:
    return measure(QUICK if quick else FULL, quick)


# --- ratios and targets -----------------------------------------------------------------


def _lat(runs: dict[str, Any], transport: str, gap_us: int, stat: str) -> float:
    return runs[transport][str(gap_us)]["latency_us"][stat]


def _ratios(runs: dict[str, Any]) -> dict[str, Any]:
    """Each transport's p50 and p99 over the MQ echo's at the same gap."""
    return {
        t: {str(g): {"p50_over_mq": ratio(_lat(runs, t, g, "median"), _lat(runs, "mq_echo", g, "median")),
                     "p99_over_mq": ratio(_lat(runs, t, g, "p99"), _lat(runs, "mq_echo", g, "p99"))}
            for g in GAPS_US}
        for t in TRANSPORTS if t != "mq_echo"
    }  # fmt: skip


def _sequential_max(runs: dict[str, Any]) -> dict[str, Any]:
    """Per transport: the longest of all its round trips in this run (every gap), and how many there were."""
    out = {}
    for t in TRANSPORTS:
        lats = [r["latency_us"] for r in runs[t].values()]
        n = sum(s["n"] for s in lats)
        out[t] = {"n": n, "max_us": max((s["max"] for s in lats if s["n"]), default=math.nan),
                  "enough_round_trips": n >= SEQUENTIAL_TARGET_N}  # fmt: skip
    return out


def _case(value: float, bound: float) -> dict[str, Any]:
    return {"value": value, "bound": bound, "met": bool(value <= bound)}  # NaN is never met


def _target(cases: dict[str, dict[str, Any]], note: str = "") -> dict[str, Any]:
    return {"met": all(c["met"] for c in cases.values()), "cases": cases, **({"note": note} if note else {})}


def _targets(runs: dict[str, Any], model_us: float, seq: dict[str, Any]) -> dict[str, Any]:
    """Issue 9's targets, each met or missed, with every case's value and bound (µs, or a fraction)."""
    paced = [g for g in GAPS_US if g >= 20]

    def mq(g: int, stat: str) -> float:
        return _lat(runs, "mq_echo", g, stat)

    c_hit_0, py_hit_0 = _lat(runs, "c_hit", 0, "median"), _lat(runs, "py_hit", 0, "median")
    enough = all(seq[t]["enough_round_trips"] for t in SHMD)
    return {
        "c_hit_p50_le_mq_p50": _target({str(g): _case(_lat(runs, "c_hit", g, "median"), mq(g, "median"))
                                        for g in paced}),
        "c_miss_p50_le_mq_p50_plus_2_model_calls": _target(
            {str(g): _case(_lat(runs, "c_miss", g, "median"), mq(g, "median") + 2 * model_us) for g in paced}),
        "c_p99_le_2x_mq_p99": _target({f"{t}@{g}": _case(_lat(runs, t, g, "p99"), 2 * mq(g, "p99"))
                                       for t in ("c_hit", "c_miss") for g in paced}),
        "c_hit_back_to_back_p50_le_2us": _target({"0": _case(c_hit_0, 2.0)}),
        "py_hit_back_to_back_p50_le_15us": _target({"0": _case(py_hit_0, 15.0)}),
        "py_hit_back_to_back_le_6x_c": _target({"0": _case(ratio(py_hit_0, c_hit_0), 6.0)}),
        "py_hit_1ms_p50_le_mq_p50_plus_15us": _target(
            {"1000": _case(_lat(runs, "py_hit", 1_000, "median"), mq(1_000, "median") + 15.0)}),
        "daemon_cpu_at_1000_per_s_le_10pct_core": _target(
            {t: _case(runs[t]["1000"]["peer_cpu_fraction_of_core"], 0.10) for t in SHMD},
            "daemon CPU over each 1 ms-gap run / its wall time"),
        "max_over_sequential_le_50ms": _target(
            {t: _case(seq[t]["max_us"], SEQUENTIAL_MAX_US) for t in SHMD},
            "" if enough else f"fewer than {SEQUENTIAL_TARGET_N:,} round trips on some transport (--quick, or runs "
                              "cut by their time budget): indicative"),
    }  # fmt: skip


# --- output -------------------------------------------------------------------------------


def _gap_label(gap_us: int) -> str:
    return "back to back" if gap_us == 0 else f"{gap_us // 1000} ms" if gap_us >= 1000 else f"{gap_us} µs"


def report(r: dict[str, Any]) -> str:
    runs = {**r["figures"], **{t: r["baselines"][t] for t in ECHO}}
    rows = []
    for g in GAPS_US:
        for t in TRANSPORTS:
            rec, q = runs[t][str(g)], r["ratios"].get(t, {}).get(str(g), {})
            s = rec["latency_us"]
            rows.append([_gap_label(g), LABELS[t], s["median"], s["p99"], s["p999"], s["max"], s["n"],
                         q.get("p50_over_mq", 1.0), q.get("p99_over_mq", 1.0), rec["client_cpu_us_per_request"],
                         rec["peer_cpu_us_per_request"], rec["peer_cpu_fraction_of_core"]])  # fmt: skip
    lat = table(["gap", "transport", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "n", "p50/MQ", "p99/MQ",
                 "client CPU µs/req", "peer CPU µs/req", "peer core"], rows)  # fmt: skip
    model = r["baselines"]["model_batch1_call_us"]
    seq = "\n".join(f"  {LABELS[t]}: max {v['max_us']:.0f} µs over {v['n']:,} round trips"
                    for t, v in r["sequential_max"].items())  # fmt: skip
    targets = []
    for name, tg in r["targets"].items():
        worst = max(tg["cases"].items(), key=lambda kv: ratio(kv[1]["value"], kv[1]["bound"]))
        targets.append(f"  {'met   ' if tg['met'] else 'MISSED'} {name}: worst {worst[0]}: "
                       f"{worst[1]['value']:.3g} vs bound {worst[1]['bound']:.3g}"
                       + (f" ({tg['note']})" if tg.get("note") else ""))  # fmt: skip
    return "\n".join([
        f"pace benchmark ({'quick' if r['quick'] else 'full'}): one request every gap, workload model; "
        "peer = daemon (shmd) or echo child (baselines)",
        lat, "",
        f"model batch-1 call (LiteRT, this process): p50 {model['median']:.2f} µs, p99 {model['p99']:.2f} µs",
        "longest round trip per transport over the whole run:", seq, "",
        "issue 9 targets:", *targets,
    ])  # fmt: skip


def plot(r: dict[str, Any], path: Path) -> None:
    """p50 and p99 against the gap, one line per transport, log latency axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {**r["figures"], **{t: r["baselines"][t] for t in ECHO}}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    x = range(len(GAPS_US))
    for ax, stat, title in zip(axes, ("median", "p99"), ("p50", "p99"), strict=True):
        for t in TRANSPORTS:
            style = "--" if t in ECHO else "-"
            ax.plot(x, [runs[t][str(g)]["latency_us"][stat] for g in GAPS_US], style, marker="o", label=LABELS[t])
        ax.set_xticks(list(x), [_gap_label(g) for g in GAPS_US])
        ax.set_yscale("log")
        ax.set_xlabel("gap between requests")
        ax.set_title(f"round trip {title}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("µs")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"shmd paced round trips ({'quick' if r['quick'] else 'full'} run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench pace", __doc__.splitlines()[0], run, report,
               "fewer round trips (< 1 minute; the 50,000-trip maximum is then indicative)", plot=plot)  # fmt: skip


__all__ = ["main"]
