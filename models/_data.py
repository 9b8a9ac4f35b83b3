"""Reproducible splits: generator seed = seed * 100 + model_id * 10 + split (0 train, 1 cal, 2 test)."""

from __future__ import annotations

import numpy as np

from kernel_abi import ModelId

from . import _gen_failure, _gen_memory, _gen_threat, _gen_workload
from ._validate import encode_batch

GENERATORS = {
    ModelId.WORKLOAD: _gen_workload.generate,
    ModelId.THREAT: _gen_threat.generate,
    ModelId.FAILURE: _gen_failure.generate,
    ModelId.MEMORY: _gen_memory.generate,
}
SPLITS = {"train": 0, "cal": 1, "test": 2}


def split(mid: ModelId, seed: int, name: str, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(payload records, features, labels)`` of one split; every generated record must be valid."""
    rec, lab = GENERATORS[mid](n, seed * 100 + int(mid) * 10 + SPLITS[name])
    x, err = encode_batch(mid, rec)
    if err.any():
        raise AssertionError(
            f"generator produced invalid records: model={mid.name} first_error_field={err[err > 0][0]}"
        )
    return rec, x, lab
