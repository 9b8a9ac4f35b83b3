"""Per-version families for ``/metrics``: the same counters and latency as per model, with a ``version`` label.

Read from the split the daemon keeps at every swap (``shmd._model_states``), plus the version
each model serves and whether it is loading another.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from shmd import _metrics as met
from shmd import _model_states as ms
from shmd._snapshot import MODEL_NAMES

_KINDS = {met.E2E: "e2e", met.SERVICE: "service"}


def version_families(a: dict[str, np.ndarray], latency_buckets) -> Iterator[Metric]:
    """The families, from one copy ``a`` of the stats arrays; ``latency_buckets`` folds a histogram row."""
    counters = (
        ("shmd_version_requests", "Requests received, per model version.", met.REQUESTS),
        ("shmd_version_inferences", "Rows run through the model, per model version.", met.INFERENCES),
        ("shmd_version_cache_hits", "Requests answered from the result cache, per model version.", met.CACHE_HITS),
        ("shmd_version_errors", "Requests answered with an error status, per model version.", met.ERRORS),
    )
    figures = {mid: ms.version_figures(a, mid) for mid in range(1, len(MODEL_NAMES) + 1)}
    for name, doc, col in counters:
        fam = CounterMetricFamily(name, doc, labels=["model", "version"])
        for mid, model in enumerate(MODEL_NAMES, start=1):
            for version, (row, _, _) in sorted(figures[mid].items()):
                fam.add_metric([model, str(version)], float(row[col]))
        yield fam
    lat = HistogramMetricFamily(
        "shmd_version_latency_seconds", "Request latency per model version (kinds as shmd_latency_seconds).",
        labels=["model", "version", "kind"],
    )  # fmt: skip
    for mid, model in enumerate(MODEL_NAMES, start=1):
        for version, (_, hist, sums) in sorted(figures[mid].items()):
            for kind, kind_name in _KINDS.items():
                total_s = float(sums[kind, 1]) / 1e9
                lat.add_metric([model, str(version), kind_name], latency_buckets(hist[kind]), total_s)
    yield lat
    serving = GaugeMetricFamily("shmd_model_version", "The version each model serves.", labels=["model"])
    loading = GaugeMetricFamily("shmd_model_loading", "The version being loaded beside it (0: none).", labels=["model"])
    for mid, model in enumerate(MODEL_NAMES, start=1):
        serving.add_metric([model], float(a["model_state"][mid, ms.MS_VERSION]))
        loading.add_metric([model], float(a["model_state"][mid, ms.MS_LOADING]))
    yield from (serving, loading)
