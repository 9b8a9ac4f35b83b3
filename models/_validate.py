"""Python-side validation with per-field reasons, and batch encoding for training and tests."""

from __future__ import annotations

import math

import numpy as np

from kernel_abi import PAYLOADS, ModelId

from ._spec import N_FEATURES, RANGES


def _fmt(lo: float, hi: float) -> str:
    if math.isinf(hi):
        return f">= {lo:g}" if not math.isinf(lo) else "finite"
    return f"in [{lo:g}, {hi:g}]"


def validate(mid: ModelId | int, payload_record: np.void | np.ndarray) -> list[tuple[str, str]]:
    """``(field, reason)`` for every invalid field of one payload record, in struct order.

    An empty list means the record is valid. The first entry names the same field as
    the compiled encoder's ``error_field`` code.
    """
    mid = ModelId(mid)
    rec = payload_record
    problems: list[tuple[str, str]] = []
    for name in PAYLOADS[mid].names:
        if name not in RANGES[mid]:
            continue  # identifier hashes: any value is valid
        lo, hi = RANGES[mid][name]
        values = np.atleast_1d(np.asarray(rec[name])).astype(np.float64)
        reason = ""
        for j, v in enumerate(values):
            where = f"{name}[{j}]" if values.size > 1 else name
            if not math.isfinite(v):
                reason = f"{where}={float(v)} is not a finite number"
                break
            if not lo <= v <= hi:
                reason = f"{where}={v:g} is out of range: must be {_fmt(lo, hi)}"
                break
        if not reason and mid == ModelId.THREAT:
            reason = _threat_cross_check(name, rec)
        if reason:
            problems.append((name, reason))
    return problems


def _threat_cross_check(name: str, rec: np.void | np.ndarray) -> str:
    count = int(rec["anomaly_count"])
    if name == "severity_counts":
        total = int(np.asarray(rec["severity_counts"]).astype(np.int64).sum())
        if total != count:
            return f"severity_counts sum to {total} but anomaly_count={count}"
    if name == "distinct_anomaly_types" and int(rec["distinct_anomaly_types"]) > count:
        return f"distinct_anomaly_types={int(rec['distinct_anomaly_types'])} exceeds anomaly_count={count}"
    return ""


def encode_batch(mid: ModelId | int, payloads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode a 1-D array of payload records: ``(features float32[n, f], error_field int32[n])``.

    Rows with a non-zero error_field have unspecified (zero) features.
    """
    from ._encode import BATCH_ENCODERS  # deferred: numba is heavy and validate() does not need it

    mid = ModelId(mid)
    if payloads.dtype != PAYLOADS[mid]:
        raise TypeError(f"payloads must have the {mid.name} payload dtype: dtype={payloads.dtype}")
    n = payloads.shape[0]
    out = np.zeros((n, N_FEATURES[mid]), np.float32)
    err = np.zeros(n, np.int32)
    BATCH_ENCODERS[mid](payloads, out, err)
    return out, err
