"""Shared helpers for benchmarks: percentiles, ratios, targets, a text table, one JSON file.

    summary = summarize(samples)                 # {"median", "p99", "p999", "max", "p1", "n"}
    print(table(["what", "median"], rows))       # aligned text table
    targets = {"rtt_p50": target(12.3, "<=", 5)} # {"value", "target": "<= 5", "met": False}
    write_json(path, {"figures": ..., "baselines": ..., "ratios": ..., "targets": targets})

Samples are plain numbers in whatever unit the caller chose; name the unit in the key.
Every results file carries ``stamp()``: host, CPU count, UTC time and the git
commit it was measured on ("+dirty" when the tree had uncommitted changes), and
the names of the targets it met and missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import operator
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def summarize(samples: Iterable[float]) -> dict[str, float]:
    """Median, p99, p99.9 and max (latency tails), p1 (the tail for throughput), count of ``samples``."""
    arr = np.asarray(samples if isinstance(samples, np.ndarray) else list(samples), dtype=np.float64)
    if arr.size == 0:
        return {"median": math.nan, "p99": math.nan, "p999": math.nan, "max": math.nan, "p1": math.nan, "n": 0}
    return {
        "median": float(np.median(arr)),
        "p99": float(np.percentile(arr, 99)),
        "p999": float(np.percentile(arr, 99.9)),
        "max": float(arr.max()),
        "p1": float(np.percentile(arr, 1)),
        "n": int(arr.size),
    }


_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def target(value: float, op: str, bound: float) -> dict[str, Any]:
    """A target as the results file records it: the value, the rule, and whether it was met (NaN: missed)."""
    met = not math.isnan(value) and bool(_OPS[op](value, bound))
    return {"value": value, "target": f"{op} {bound:g}", "met": met}


def verdict(t: dict[str, Any]) -> str:
    """``met`` or ``MISSED`` with the rule, for a report line."""
    return f"{'met' if t['met'] else 'MISSED'} ({t['target']})"


def ratio(value: float, reference: float) -> float:
    """``value / reference``, NaN when the reference is zero or missing."""
    return value / reference if reference and not math.isnan(reference) else math.nan


def fmt(value: float, digits: int = 3) -> str:
    """A number short enough for a table: 3 significant digits, SI suffix for big ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as an aligned text table; floats go through ``fmt``."""
    cells = [[fmt(c) if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells]
    return "\n".join(out)


def _commit() -> str | None:
    """The checked-out commit of this tree (with "+dirty" when it has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def stamp() -> dict[str, Any]:
    """Where and when a result was measured: host, CPUs, Python, UTC time, git commit."""
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "unix_time": time.time(),
        "commit": _commit(),
    }


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    """Write one benchmark's JSON object, stamped (``stamp()``), with its targets' verdicts listed."""
    doc = {**stamp(), **result}
    targets = result.get("targets", {})
    if all(isinstance(t, dict) and "met" in t for t in targets.values()):
        doc["targets_met"] = sorted(k for k, t in targets.items() if t["met"])
        doc["targets_missed"] = sorted(k for k, t in targets.items() if not t["met"])
    Path(path).write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n")


def cli(
    argv: list[str],
    prog: str,
    description: str,
    run: Callable[[bool], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    quick_help: str,
    plot: Callable[[dict[str, Any], Path], None] | None = None,
) -> int:
    """The shared ``[--quick] [--json PATH]`` command line of a benchmark: run, print, write.

    With ``plot``, the figures are also drawn to a PNG next to the JSON (same name, ``.png``).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="PATH", help="write the figures as one JSON object")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    result = run(args.quick)
    result["wall_s"] = time.monotonic() - t0
    print(report(result))
    print(f"wall {result['wall_s']:.1f} s")
    if args.json:
        write_json(args.json, result)
        if plot is not None:
            plot(result, Path(args.json).with_suffix(".png"))
    return 0
