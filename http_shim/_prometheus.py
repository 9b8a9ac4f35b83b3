"""``/metrics``: the stats segment in the Prometheus text format.

A custom collector reads the arrays at scrape time (nothing is mirrored).
Latency histograms are real Prometheus histograms so they aggregate across
hosts: the daemon's log-linear buckets (<= 0.78% wide) are folded into fixed
``le`` bounds. A daemon bucket counts toward ``le=B`` only when every value
it can hold is <= B, so each cumulative count is exact or a hair low, never
high.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kernel_abi import Status
from shmd import _metrics as met
from shmd import _snapshot
from shmd._metrics import EVICTIONS, HITS, INSERTS, MISSES, REFRESH_DRIFT, REFRESH_STABLE
from shmd._stats_segment import StatsSegment

from ._prometheus_versions import version_families

LATENCY_BOUNDS_S: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_KINDS = {met.E2E: "e2e", met.SERVICE: "service"}


def _bucket_max_ns() -> np.ndarray:
    """The largest ns value each daemon histogram bucket holds (the last is open-ended)."""
    idx = np.arange(met.N_BUCKETS)
    top = idx.astype(np.float64)  # below SUB: one value per bucket
    high = idx >= met.SUB
    exp = (idx[high] - met.SUB) // met.SUB + met.SUB_BITS
    sub = (idx[high] - met.SUB) % met.SUB
    width = np.left_shift(1, exp - met.SUB_BITS).astype(np.float64)
    top[high] = (met.SUB + sub + 1) * width - 1
    top[-1] = np.inf
    return top


# For each le bound, how many leading daemon buckets lie entirely below it.
_CUT = np.searchsorted(_bucket_max_ns(), np.array(LATENCY_BOUNDS_S) * 1e9, side="right")


def latency_buckets(hist_row: np.ndarray) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs (ending with +Inf) for one daemon histogram row."""
    cum = np.concatenate(([0], np.cumsum(hist_row)))
    pairs = [(repr(b), float(cum[c])) for b, c in zip(LATENCY_BOUNDS_S, _CUT, strict=True)]
    pairs.append(("+Inf", float(cum[-1])))
    return pairs


class StatsCollector(Collector):
    """Every counter of one daemon, read from its stats segment at scrape time."""

    def __init__(self, seg: StatsSegment) -> None:
        self.seg = seg

    def collect(self) -> Iterator[Metric]:
        a = {k: np.array(v) for k, v in self.seg.arrays.items()}  # one copy per scrape
        names = _snapshot.MODEL_NAMES
        model_counters = (
            ("shmd_requests", "Requests received, per model.", met.REQUESTS),
            ("shmd_inferences", "Rows run through the model (cache misses that were inferred).", met.INFERENCES),
            ("shmd_cache_hits", "Requests answered from the result cache.", met.CACHE_HITS),
            ("shmd_cache_misses", "Requests that missed the result cache.", met.CACHE_MISSES),
            ("shmd_errors", "Requests answered with an error status.", met.ERRORS),
            ("shmd_batches", "Model invocations (micro-batches).", met.BATCHES),
        )
        for name, doc, col in model_counters:
            fam = CounterMetricFamily(name, doc, labels=["model"])
            for mid, model in enumerate(names, start=1):
                fam.add_metric([model], float(a["model"][mid, col]))
            yield fam

        lat = HistogramMetricFamily(
            "shmd_latency_seconds",
            "Request latency: e2e = caller's submit to response published, service = drain to publish.",
            labels=["model", "kind"],
        )
        for mid, model in enumerate(names, start=1):
            for kind, kind_name in _KINDS.items():
                total_s = float(a["summary"][mid, kind, met.SUM]) / 1e9
                lat.add_metric([model, kind_name], latency_buckets(a["hist"][mid, kind]), total_s)
        yield lat

        yield from version_families(a, latency_buckets)

        # Batch sizes: daemon bucket k holds sizes 2**k .. 2**(k+1)-1, so le = 2**(k+1)-1 is exact.
        batch = HistogramMetricFamily("shmd_batch_size", "Rows per model invocation.", labels=["model"])
        for mid, model in enumerate(names, start=1):
            cum = np.cumsum(a["batch_hist"][mid])
            pairs = [(str((1 << (k + 1)) - 1), float(cum[k])) for k in range(met.N_BATCH_BUCKETS - 1)]
            pairs.append(("+Inf", float(cum[-1])))
            batch.add_metric([model], pairs, None)  # sizes are not summed by the daemon
        yield batch

        cache_counters = (
            ("shmd_result_cache_hits", HITS),
            ("shmd_result_cache_misses", MISSES),
            ("shmd_result_cache_inserts", INSERTS),
            ("shmd_result_cache_evictions", EVICTIONS),
            ("shmd_result_cache_refreshes_stable", REFRESH_STABLE),
            ("shmd_result_cache_refreshes_drifting", REFRESH_DRIFT),
        )
        for name, col in cache_counters:
            what = name.removeprefix("shmd_result_cache_").replace("_", " ")
            fam = CounterMetricFamily(name, f"Result cache {what}.", labels=["model"])
            for mid, model in enumerate(names, start=1):
                fam.add_metric([model], float(a["cache_stats"][mid, col]))
            yield fam
        entries = GaugeMetricFamily("shmd_result_cache_entries", "Live cache entries.", labels=["model"])
        for mid, model in enumerate(names, start=1):
            entries.add_metric([model], float(a["cache_entries"][mid]))
        yield entries
        ttl = GaugeMetricFamily("shmd_result_cache_ttl_seconds", "Cache TTL now (adaptive: tuned).", labels=["model"])
        for mid, model in enumerate(names, start=1):
            ttl.add_metric([model], float(a["cache_ttl_ns"][mid]) / 1e9)
        yield ttl

        channels = self.seg.meta.get("channels", [])
        submitted = CounterMetricFamily("shmd_channel_submitted", "Records taken from the SQ.", labels=["channel"])
        completed = CounterMetricFamily("shmd_channel_completed", "Responses published.", labels=["channel"])
        rejected = CounterMetricFamily(
            "shmd_channel_rejected", "Records answered with an error status.", labels=["channel", "status"]
        )
        depth = GaugeMetricFamily("shmd_channel_queue_depth", "Records waiting in the SQ.", labels=["channel"])
        corrupt = GaugeMetricFamily("shmd_channel_corrupt", "1 when the channel is marked corrupt.", labels=["channel"])
        for c, ch in enumerate(channels):
            row = a["channel"][c]
            submitted.add_metric([ch], float(row[met.SUBMITTED]))
            completed.add_metric([ch], float(row[met.COMPLETED]))
            for s in Status:
                if s != Status.OK:
                    rejected.add_metric([ch, s.name.lower()], float(row[met.REJECTED + s]))
            depth.add_metric([ch], float(a["gauges"][c, 0]))
            corrupt.add_metric([ch], float(a["gauges"][c, 1]))
        yield from (submitted, completed, rejected, depth, corrupt)

        d = _snapshot.daemon_snapshot(self.seg, a)
        age = GaugeMetricFamily("shmd_heartbeat_age_seconds", "Time since the poll loop's last housekeeping.")
        age.add_metric([], max(d["heartbeatAgeMs"], 0.0) / 1e3)
        yield age
        up = GaugeMetricFamily("shmd_up", "1 when the poll loop's heartbeat is fresh (< 1 s).")
        up.add_metric([], 1.0 if d["heartbeatFresh"] else 0.0)
        yield up


def registry_for(seg: StatsSegment) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding only this daemon's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(seg))
    return registry


__all__ = ["LATENCY_BOUNDS_S", "StatsCollector", "latency_buckets", "registry_for"]
