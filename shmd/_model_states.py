"""Model lifecycle words in the stats segment: what serves, load requests and their outcome, per-version metrics.

Layout and readers only (numpy, no numba): the daemon writes, the HTTP shim and the CLI read
and request. Per model (row = model id):

- ``model_state[mid]``: the ``MS_*`` words below. A load is requested by writing
  ``MS_REQ_VERSION`` and then bumping ``MS_REQ_SEQ``; the daemon answers by writing
  ``MS_RESULT``, the reason (``model_reason[mid]``, UTF-8, NUL-padded), the serving version,
  and last ``MS_DONE_SEQ`` = that sequence number.
- Per-version metrics: the compiled loop counts per model only, and a swap happens between
  two passes with none in flight, so the daemon splits the totals exactly at each swap:
  a version's figures are what it accumulated in its past serving periods
  (``vers_*``) plus, for the serving version, the totals since its period began (totals
  minus ``vbase_*``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _metrics as met
from ._pass_layout import LOOP_HOUSEKEEPING_ASKED

# model_state words
MS_STATE, MS_VERSION, MS_LOADED_AT_NS, MS_REQ_SEQ, MS_REQ_VERSION, MS_DONE_SEQ, MS_RESULT, MS_SWAP_NS, \
    MS_PINNED, MS_LOADING = range(10)  # fmt: skip
MS_WORDS = 10
STATES = ("absent", "serving", "loading")  # MS_STATE values
STATE_ABSENT, STATE_SERVING, STATE_LOADING = range(3)
# MS_RESULT values: what a load request came to
RESULT_SWAPPED, RESULT_REFUSED, RESULT_NOT_FOUND, RESULT_UNCHANGED = range(4)
REASON_BYTES = 256
N_VERSION_SLOTS = 4  # versions whose figures are kept per model (the oldest is dropped)


def arrays(n_models: int) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """The stats segment arrays of this module, for ``StatsSegment.create``'s spec."""
    k, c, b = N_VERSION_SLOTS, met.N_MODEL_COUNTERS, met.N_BUCKETS
    return {
        "model_state": (np.int64, (n_models, MS_WORDS)),
        "model_reason": (np.uint8, (n_models, REASON_BYTES)),
        "vers_ids": (np.int64, (n_models, k)),  # version held by each slot, 0 = free
        "vers_model": (np.int64, (n_models, k, c)),
        "vers_hist": (np.int64, (n_models, k, 2, b)),
        "vers_sum": (np.int64, (n_models, k, 2, 2)),  # latency count, sum (ns) per kind
        "vbase_model": (np.int64, (n_models, c)),
        "vbase_hist": (np.int64, (n_models, 2, b)),
        "vbase_sum": (np.int64, (n_models, 2, 2)),
    }


def write_reason(a: dict[str, np.ndarray], mid: int, text: str) -> None:
    raw = text.encode()[: REASON_BYTES - 1]
    a["model_reason"][mid] = 0
    a["model_reason"][mid, : len(raw)] = np.frombuffer(raw, np.uint8)


def reason(a: dict[str, np.ndarray], mid: int) -> str:
    row = bytes(a["model_reason"][mid])
    return row.split(b"\0", 1)[0].decode(errors="replace")


def request_load(a: dict[str, np.ndarray], mid: int, version: int) -> int:
    """Ask the daemon to serve ``version`` of model ``mid``; the sequence number its outcome will carry."""
    state = a["model_state"][mid]
    seq = int(state[MS_REQ_SEQ]) + 1
    state[MS_REQ_VERSION] = version
    state[MS_REQ_SEQ] = seq  # last: the daemon reads the version once it sees the new sequence
    ask_housekeeping(a)
    return seq


def ask_housekeeping(a: dict[str, np.ndarray]) -> None:
    """Have the daemon's housekeeping run at its loop's next quiet moment, not up to a period later.

    After the words it should act on are written: housekeeping clears the flag before it reads them.
    """
    a["loop"][LOOP_HOUSEKEEPING_ASKED] = 1


def outcome(a: dict[str, np.ndarray], mid: int, seq: int) -> tuple[int, int, str] | None:
    """``(MS_RESULT, serving version, reason)`` once the daemon has answered request ``seq``, else None."""
    state = a["model_state"][mid]
    if int(state[MS_DONE_SEQ]) < seq:
        return None
    return int(state[MS_RESULT]), int(state[MS_VERSION]), reason(a, mid)


# --- per-version figures -----------------------------------------------------------------------


def _totals(a: dict[str, np.ndarray], mid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sums = a["summary"][mid][:, [met.COUNT, met.SUM]]
    return a["model"][mid], a["hist"][mid], sums


def begin_period(a: dict[str, np.ndarray], mid: int, version: int) -> None:
    """Daemon side, at a swap (no pass in flight): close the serving version's period, start ``version``'s."""
    serving = int(a["model_state"][mid, MS_VERSION])
    model, hist, sums = _totals(a, mid)
    if serving:
        s = _slot(a, mid, serving)
        a["vers_model"][mid, s] += model - a["vbase_model"][mid]
        a["vers_hist"][mid, s] += hist - a["vbase_hist"][mid]
        a["vers_sum"][mid, s] += sums - a["vbase_sum"][mid]
    a["vbase_model"][mid] = model
    a["vbase_hist"][mid] = hist
    a["vbase_sum"][mid] = sums
    _slot(a, mid, version)


def reset(a: dict[str, np.ndarray], mid: int) -> None:
    """Daemon side, after the model's totals were zeroed: its per-version figures start over too."""
    for key in ("vers_model", "vers_hist", "vers_sum", "vbase_model", "vbase_hist", "vbase_sum"):
        a[key][mid] = 0


def _slot(a: dict[str, np.ndarray], mid: int, version: int) -> int:
    ids = a["vers_ids"][mid]
    hit = np.flatnonzero(ids == version)
    if hit.size:
        return int(hit[0])
    free = np.flatnonzero(ids == 0)
    if free.size:
        s = int(free[0])
    else:  # full: drop the oldest slot that is not serving
        serving = int(a["model_state"][mid, MS_VERSION])
        s = next(i for i in range(N_VERSION_SLOTS) if ids[i] != serving)
        for key in ("vers_ids", "vers_model", "vers_hist", "vers_sum"):
            a[key][mid, s:-1] = a[key][mid, s + 1 :].copy()
        s = N_VERSION_SLOTS - 1
    for key in ("vers_model", "vers_hist", "vers_sum"):
        a[key][mid, s] = 0
    ids[s] = version
    return s


def version_figures(a: dict[str, np.ndarray], mid: int) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Reader side: ``{version: (counters[N_MODEL_COUNTERS], hist[2, N_BUCKETS], count_sum[2, 2])}``."""
    serving = int(a["model_state"][mid, MS_VERSION])
    out = {}
    for s, version in enumerate(a["vers_ids"][mid]):
        if not version:
            continue
        model, hist, sums = a["vers_model"][mid, s].copy(), a["vers_hist"][mid, s].copy(), a["vers_sum"][mid, s].copy()
        if version == serving:
            t_model, t_hist, t_sums = _totals(a, mid)
            model += t_model - a["vbase_model"][mid]
            hist += t_hist - a["vbase_hist"][mid]
            sums += t_sums - a["vbase_sum"][mid]
        out[int(version)] = (model, hist, sums)
    return out


def version_snapshot(a: dict[str, np.ndarray], mid: int) -> dict[str, dict[str, Any]]:
    """Per version: counters and end-to-end latency (p50/p99 from its histogram), for ``/api/ml/metrics``."""
    out = {}
    for version, (model, hist, sums) in sorted(version_figures(a, mid).items()):
        count = int(sums[met.E2E, 0])
        out[str(version)] = {
            "requests": int(model[met.REQUESTS]),
            "modelInferences": int(model[met.INFERENCES]),
            "cacheHits": int(model[met.CACHE_HITS]),
            "errors": int(model[met.ERRORS]),
            "averageLatencyMs": round(int(sums[met.E2E, 1]) / count / 1e6, 6) if count else 0.0,
            "p50LatencyMs": round(met.percentile_ms(hist[met.E2E], 0.50), 6),
            "p99LatencyMs": round(met.percentile_ms(hist[met.E2E], 0.99), 6),
        }
    return out
