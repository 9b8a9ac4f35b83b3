"""``python -m bench faults [--quick] [--json PATH]``: every fault scenario under mixed load, with figures.

One ``shmd serve`` (with its HTTP shim) and C, Python and HTTP callers (tests/_faults.py).
Each scenario runs the callers for a window with one fault in it and reports, per caller
kind, calls / answered / errors by kind / lost / duplicated, plus the scenario's own
figures. Baselines, in the same run: the same window with no fault, and the same window with
the stalled client's burst (two ring-fulls of misses) reaped at once; the Python and HTTP
callers' p99 in the "client that stops reaping" window is compared with both (target: within
2x of the burst reaped at once, which loads the daemon alike).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from tests._faults import Cluster, kill_caller_mid_batch, stall_reaping

from ._stats import cli, ratio, table

DEADLINE_MS = 50.0


def _window(cluster: Cluster, seconds: float, fault: Any = None, **callers: Any) -> dict[str, Any]:
    """Callers for ``seconds`` after their first answers, ``fault()`` in the middle."""
    run = cluster.start_callers(600, timeout=30, **callers)
    figures: dict[str, Any] = {}
    try:
        run.wait_started()
        time.sleep(seconds / 2)
        if fault is not None:
            figures = fault() or {}
        time.sleep(seconds / 2)
        return {"callers": run.finish(), **figures}
    finally:
        run.kill()


def run(quick: bool) -> dict[str, Any]:
    seconds = 4.0 if quick else 10.0
    cluster = Cluster(f"bf{os.getpid()}x{secrets.token_hex(3)}")
    out: dict[str, Any] = {}
    try:
        out["baseline"] = _window(cluster, seconds)
        out["kill9_restart"] = _window(cluster, seconds, lambda: {"down_s": cluster.kill9_and_restart()})
        out["sigstop_2s"] = _window(cluster, seconds, lambda: cluster.stop_for(2.0), deadline_ms=DEADLINE_MS)
        # The stalled client's own 2 ring-fulls of misses load the daemon whether it reaps or not: the
        # control is the same burst reaped at once, so the ratio isolates what not reaping costs others.
        out["burst_reaped"] = _window(cluster, seconds, lambda: {"stalled": stall_reaping(cluster.prefix, 0.0)})
        out["stop_reaping"] = _window(cluster, seconds, lambda: {"stalled": stall_reaping(cluster.prefix, 2.0)})
        heir = lambda: {"heir": kill_caller_mid_batch(cluster.prefix)}  # noqa: E731
        out["caller_killed_mid_batch"] = _window(cluster, seconds, heir)
    finally:
        left = cluster.close()
    base, burst = out["baseline"]["callers"], out["burst_reaped"]["callers"]
    for name in ("py", "http"):
        stalled = out["stop_reaping"]["callers"][name]["p99_ms"]
        out["stop_reaping"][f"{name}_p99_vs_baseline"] = ratio(stalled, base[name]["p99_ms"])
        out["stop_reaping"][f"{name}_p99_vs_burst_reaped"] = ratio(stalled, burst[name]["p99_ms"])
    out["left_behind"] = left
    out["totals"] = {
        "lost": sum(c.get("lost", 0) for s in _scenarios(out) for c in s["callers"].values()),
        "duplicated": sum(c.get("duplicated", 0) for s in _scenarios(out) for c in s["callers"].values()),
    }
    return {"figures": out, "baselines": {"no_fault": base}, "window_s": seconds}


def _scenarios(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in out.values() if isinstance(v, dict) and "callers" in v]


def report(result: dict[str, Any]) -> str:
    rows = []
    for name, scen in result["figures"].items():
        if not isinstance(scen, dict) or "callers" not in scen:
            continue
        for kind, c in scen["callers"].items():
            errors = ", ".join(f"{k}={v}" for k, v in sorted(c.get("errors", {}).items())) or "-"
            rows.append([name, kind, c.get("calls", 0), c.get("ok", 0), c.get("lost", "?"), c.get("duplicated", "?"),
                         c.get("dropped", 0), float(c.get("p99_ms") or float("nan")), errors])  # fmt: skip
    f = result["figures"]
    notes = [
        f"kill -9: down {f['kill9_restart'].get('down_s', float('nan')):.1f} s (restart on the same prefix)",
        f"stop reaping: {f['stop_reaping']['stalled']}; others' p99 vs the same burst reaped at once (target "
        f"<= 2x): py {f['stop_reaping']['py_p99_vs_burst_reaped']:.2f}x, "
        f"http {f['stop_reaping']['http_p99_vs_burst_reaped']:.2f}x; vs no fault: "
        f"py {f['stop_reaping']['py_p99_vs_baseline']:.2f}x, http {f['stop_reaping']['http_p99_vs_baseline']:.2f}x",
        f"caller killed mid-batch: {f['caller_killed_mid_batch']['heir']}",
        f"totals: {f['totals']}; left in /dev/shm: {f['left_behind']}",
    ]
    headers = ["scenario", "caller", "calls", "ok", "lost", "dup", "dropped", "p99 ms", "errors (told)"]
    return table(headers, rows) + "\n" + "\n".join(notes)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench faults", __doc__.splitlines()[0], run, report,
               "4 s windows instead of 10 s")  # fmt: skip
