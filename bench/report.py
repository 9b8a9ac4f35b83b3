"""``python -m bench report [--results DIR] [--run [--quick]]``: the benchmark JSON as a report with plots.

Reads every ``*.json`` in ``bench/results/`` (what ``python -m bench NAME --json``
wrote) and writes ``REPORT.md`` there, with PNG plots in ``plots/``:

- latency CDFs per transport: each latency summary drawn through its recorded
  percentiles (p1, p50, p99, p99.9, max; whatever the run kept), one panel per
  benchmark, the same run's baselines dashed;
- latency against pace: summaries measured at several offered rates or gaps;
- throughput against batch size;
- the HTTP shim against the bare aiohttp endpoint of the same run;

and, per benchmark, its stamp (host, time, commit), every figure beside its
baselines, the ratios and the targets. The plots are found by the shape of
the JSON (a dict with ``median``/``p50`` and ``p99`` under a key naming its
unit, ``_us`` or ``_ns``; a ``batchN`` or numeric key for the x axis), so a
new benchmark shows up without a change here. With ``--run`` every benchmark
is run first (``--quick`` passed on), writing its JSON into the directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._stats import fmt

RESULTS = Path(__file__).resolve().parent / "results"
# Percentile keys a summary may hold, and the fraction of samples at or below each.
QUANTILES = (("p1", 0.01), ("median", 0.5), ("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))
_UNIT = re.compile(r"(?:^|_)(us|ns)$")
_BATCH = re.compile(r"batch_?(\d+)")
_RATE = re.compile(r"open_loop_(\d+)_per_s")
_THROUGHPUT = re.compile(r"rps|per_s")


@dataclass
class Latency:
    """One latency summary found in a benchmark's JSON, in µs."""

    bench: str
    path: tuple[str, ...]
    quantiles: dict[float, float]  # fraction -> µs
    baseline: bool

    @property
    def label(self) -> str:
        return "/".join(p for p in self.path if p not in ("figures", "baselines", "baseline"))


@dataclass
class Bench:
    name: str
    doc: dict[str, Any]
    latencies: list[Latency] = field(default_factory=list)


def _summary_us(node: dict[str, Any], unit: str) -> dict[float, float]:
    scale = 1e-3 if unit == "ns" else 1.0
    out = {}
    for key, q in QUANTILES:
        for k in (key, f"{key}_{unit}"):
            value = node.get(k)
            if isinstance(value, int | float) and math.isfinite(value):
                out[q] = float(value) * scale
    return out


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):  # rows of a table: "[i]", never mistaken for a numeric key (a gap)
        for i, value in enumerate(node):
            yield from _walk(value, (*path, f"[{i}]"))


def find_latencies(bench: str, doc: dict[str, Any]) -> list[Latency]:
    """Every latency summary in ``doc``: a dict of percentiles under a key (or keys) naming µs or ns."""
    found = []
    for path, node in _walk(doc, ()):
        if not isinstance(node, dict) or not path:
            continue
        unit = _UNIT.search(path[-1])
        inner = next((u for u in ("us", "ns") if f"p99_{u}" in node), None)
        if unit is None and inner is None:
            continue
        quantiles = _summary_us(node, inner or unit.group(1))
        if 0.5 in quantiles and 0.99 in quantiles:
            found.append(Latency(bench, path, quantiles, any(p.startswith("baseline") for p in path)))
    return found


def load(results: Path) -> list[Bench]:
    benches = []
    for path in sorted(results.glob("*.json")):
        doc = json.loads(path.read_text())
        benches.append(Bench(path.stem, doc, find_latencies(path.stem, doc)))
    return benches


# --- plots -----------------------------------------------------------------------------------


def _pace_of(lat: Latency) -> tuple[str, float] | None:
    """(x axis name, x) when this summary is one point of a pace sweep."""
    for part in lat.path:
        if m := _RATE.match(part):
            return "offered load, requests/s", float(m.group(1))
        if part.isdigit():
            return "gap between requests, µs (0 = back to back)", float(part)
    return None


def _series_key(lat: Latency) -> str:
    parts = [_RATE.sub("open_loop", p) for p in lat.path if not p.isdigit()]
    return "/".join(p for p in parts if p not in ("figures", "baselines", "baseline"))


_TICKS = {0.01: "p1", 0.1: "p10", 0.5: "p50", 0.9: "p90", 0.99: "p99", 0.999: "p99.9", 0.9999: "max"}


def plot_cdfs(benches: list[Bench], out: Path) -> Path | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    panels = [(b, [lat for lat in b.latencies if _pace_of(lat) is None]) for b in benches]
    panels = [(b, lats) for b, lats in panels if lats]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.6 * len(panels)), squeeze=False)
    for ax, (b, lats) in zip(axes[:, 0], panels, strict=True):
        for lat in lats:
            qs = sorted(lat.quantiles.items())
            ax.plot([v for _, v in qs], [min(q, 0.9999) for q, _ in qs], "--" if lat.baseline else "-", marker="o",
                    label=("baseline: " if lat.baseline else "") + lat.label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("logit")
        ax.set_yticks(list(_TICKS), list(_TICKS.values()))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency, µs")
        ax.set_ylabel("percentile")
        ax.set_title(f"{b.name}: latency through the recorded percentiles (baselines dashed; max at 0.9999)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower right")
    return _save(fig, out / "latency_cdf.png")


def plot_pace(benches: list[Bench], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    panels = []
    for b in benches:
        series: dict[str, tuple[str, list[tuple[float, Latency]]]] = {}
        for lat in b.latencies:
            pace = _pace_of(lat)
            if pace is not None:
                series.setdefault(_series_key(lat), (pace[0], []))[1].append((pace[1], lat))
        if series:
            panels.append((b, series))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4 * len(panels)), squeeze=False)
    for ax, (b, series) in zip(axes[:, 0], panels, strict=True):
        xlabel = next(iter(series.values()))[0]
        for name, (_, points) in series.items():
            points.sort(key=lambda p: p[0])
            xs = [max(x, 1.0) for x, _ in points]  # a gap of 0 (back to back) still has a place on a log axis
            style = "--" if points[0][1].baseline else "-"
            for q, marker in ((0.5, "o"), (0.99, "^")):
                ys = [lat.quantiles.get(q, math.nan) for _, lat in points]
                ax.plot(xs, ys, style, marker=marker, label=f"{name} p{q * 100:g}")
        for lat in b.latencies:  # the run's unpaced baselines, as a floor to read the sweep against
            if lat.baseline and _pace_of(lat) is None:
                ax.axhline(lat.quantiles[0.5], linestyle=":", color="gray")
                ax.annotate(f"baseline {lat.label} p50", (0, lat.quantiles[0.5]), xycoords=("axes fraction", "data"),
                            fontsize="x-small", color="gray", va="bottom")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latency, µs")
        ax.set_title(f"{b.name}: latency against pace (p50 ●, p99 ▲; baselines dashed or dotted)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    return _save(fig, out / "latency_vs_pace.png")


def throughput_series(doc: dict[str, Any]) -> dict[str, list[tuple[int, float, bool]]]:
    """``name -> [(batch, per second, baseline)]`` from ``batchN`` throughput keys and rows with a ``batch``."""
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for path, node in _walk(doc, ()):
        baseline = any(p.startswith("baseline") for p in path)
        if path and (m := _BATCH.search(path[-1])) and _THROUGHPUT.search(path[-1]):
            value = node.get("median") if isinstance(node, dict) else node
            if isinstance(value, int | float):
                name = _BATCH.sub("batchN", path[-1])
                series.setdefault(name, []).append((int(m.group(1)), float(value), baseline))
        elif isinstance(node, dict) and "batch" in node and "rows_per_s" in node:
            name = " ".join(str(node[k]) for k in ("model", "backend") if k in node)
            series.setdefault(name, []).append((int(node["batch"]), float(node["rows_per_s"]), baseline))
    return {k: sorted(v) for k, v in series.items() if len(v) > 1 or any(b for _, _, b in v)}


def plot_throughput(benches: list[Bench], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    panels = [(b, s) for b in benches if (s := throughput_series(b.doc))]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.6 * len(panels)), squeeze=False)
    for ax, (b, series) in zip(axes[:, 0], panels, strict=True):
        for name, points in series.items():
            baseline = points[0][2]
            ax.plot([p[0] for p in points], [p[1] for p in points], "--" if baseline else "-", marker="o",
                    label=("baseline: " if baseline else "") + name)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("records per second")
        ax.set_title(f"{b.name}: throughput against batch size (baselines dashed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    return _save(fig, out / "throughput_vs_batch.png")


def http_pairs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(case, shim, bare)`` for every case measured under ``figures`` and at the same place under ``baseline``."""
    base = doc.get("baseline", doc.get("baselines", {}))
    pairs = []
    for path, node in _walk(doc.get("figures", {}), ()):
        other: Any = base
        for part in path:
            other = other.get(part, {}) if isinstance(other, dict) else {}
        if isinstance(node, dict) and "rps" in node and isinstance(other, dict) and "rps" in other:
            pairs.append(("/".join(path), node, other))
    return pairs


def plot_http(benches: list[Bench], out: Path) -> Path | None:
    """The shim against the bare endpoint, case by case (``figures`` against ``baseline``, same run)."""
    import matplotlib.pyplot as plt

    http = next((b for b in benches if b.name == "http"), None)
    pairs = http_pairs(http.doc) if http is not None else []
    if not pairs:
        return None
    cases = [case for case, _, _ in pairs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(12, len(cases) * 1.2), 4.5))
    xs = range(len(cases))
    for offset, what, i in ((-0.2, "shmd HTTP shim", 1), (0.2, "bare aiohttp endpoint", 2)):
        left.bar([x + offset for x in xs], [p[i]["rps"] for p in pairs], 0.4, label=what)
        for shift, q, hatch in ((-0.1, "p50_us", ""), (0.1, "p99_us", "//")):
            right.bar([x + offset + shift for x in xs], [p[i].get(q, 0) for p in pairs], 0.2, hatch=hatch,
                      label=f"{what} {q[:-3]}")  # fmt: skip
    for ax, ylabel in ((left, "requests per second"), (right, "latency, µs")):
        ax.set_xticks(list(xs), cases, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="x-small")
    right.set_yscale("log")
    fig.suptitle("HTTP: the shim against a bare aiohttp endpoint, same run (c = concurrent clients)")
    return _save(fig, out / "http_vs_bare.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- markdown --------------------------------------------------------------------------------


def _flat(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Leaves as ``a/b/c -> value``; a percentile summary stays one row."""
    if isinstance(node, dict) and not ({"median", "p99"} <= set(node) or "p99_us" in node):
        for key, value in node.items():
            yield from _flat(value, (*path, str(key)))
    elif not isinstance(node, list):
        yield "/".join(path), node


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        keys = [k for k in ("median", "p50_us", "p99", "p99_us", "p999", "max", "rps", "n") if k in value]
        return ", ".join(f"{k.removesuffix('_us')} {fmt(value[k])}" for k in keys)
    if isinstance(value, bool):
        return "met" if value else "**missed**"
    return fmt(value) if isinstance(value, int | float) else str(value)


def _stamp(doc: dict[str, Any]) -> str:
    when = doc.get("unix_time")
    parts = [f"host `{doc.get('host', '?')}`"]
    if isinstance(when, int | float):
        parts.append(datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    parts.append(f"commit `{doc['commit']}`" if doc.get("commit") else "commit not recorded")
    if doc.get("quick"):
        parts.append("**quick run**")
    return ", ".join(parts)


def _section(b: Bench) -> list[str]:
    lines = [f"## {b.name}", "", _stamp(b.doc), ""]
    rows = []
    for key in ("figures", "results", "baselines", "baseline", "ratios", "targets"):
        node = b.doc.get(key)
        if isinstance(node, list):  # rows of a table (models): one row each, named by their text fields
            for item in node:
                name = " ".join(str(v) for v in item.values() if isinstance(v, str))
                rows += [(key, f"{name} {k}", v) for k, v in item.items() if not isinstance(v, str)]
        elif node is not None:
            rows += [(key, path, value) for path, value in _flat(node)]
    if rows:
        lines += ["| part | what | value |", "| --- | --- | --- |"]
        lines += [f"| {part} | {what} | {_cell(value)} |" for part, what, value in rows]
    return [*lines, ""]


def write_report(results: Path = RESULTS) -> Path:
    """Build ``REPORT.md`` and its plots from the JSON in ``results``; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    benches = load(results)
    plots = results / "plots"
    plots.mkdir(exist_ok=True)
    made = [
        ("Latency CDFs per transport", plot_cdfs(benches, plots)),
        ("Latency against pace", plot_pace(benches, plots)),
        ("Throughput against batch size", plot_throughput(benches, plots)),
        ("HTTP shim against the bare endpoint", plot_http(benches, plots)),
    ]
    lines = [
        "# Benchmark report",
        "",
        "Built by `python -m bench report` from the JSON in this directory (each written by "
        "`python -m bench NAME --json`). Every figure sits beside the baselines measured in the same run "
        "and their ratios; plots draw baselines dashed. Other helpers' processes may have shared the CPU: "
        "compare a figure with its own run's baseline, not with another run.",
        "",
        f"Benchmarks: {', '.join(b.name for b in benches)}.",
        "",
    ]
    for title, path in made:
        if path is not None:
            lines += [f"### {title}", "", f"![{title}](plots/{path.name})", ""]
    for b in benches:
        lines += _section(b)
    report = results / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: list[str]) -> int:
    from bench.__main__ import BENCHMARKS

    p = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="directory of the JSON (default bench/results)")
    p.add_argument("--run", action="store_true", help="run every benchmark first, writing its JSON there")
    p.add_argument("--quick", action="store_true", help="with --run: the short runs")
    args = p.parse_args(argv)
    if args.run:
        for name in (b for b in BENCHMARKS if b != "report"):
            cmd = [sys.executable, "-m", "bench", name, "--json", str(args.results / f"{name}.json")]
            subprocess.run(cmd + (["--quick"] if args.quick else []), check=True)
    print(write_report(args.results))
    return 0
