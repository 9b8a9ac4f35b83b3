"""Raw network outputs -> the four API outputs, compiled so the daemon can run it in its loop.

Column layouts of ``raw`` are described in ``_spec.N_RAW_OUTPUTS``; the output columns
follow ``kernel_abi.OUTPUT_NAMES``. Decisions (threat/failure type, predicted time) are
gated on the model's own probability so the four numbers never contradict each other:
below 0.5 there is no threat (type NONE) and no failure (type NONE, time -1).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernel_abi import ModelId

from ._spec import MEM_LOG_SCALE, TIME_LOG_SCALE

_WORKLOAD, _THREAT, _FAILURE = int(ModelId.WORKLOAD), int(ModelId.THREAT), int(ModelId.FAILURE)


@numba.njit(nogil=True, cache=True)
def _clip01(x):
    # "not x >= 0" also maps NaN to 0: a broken output never leaves the API range.
    if not x >= 0.0:
        return 0.0
    return 1.0 if x > 1.0 else np.float64(x)


#: Caps for values decoded from a log scale, so an overflowing output stays finite.
MAX_MEMORY_BYTES = float(2**60)
MAX_TIME_MS = 1e12


@numba.njit(nogil=True, cache=True)
def _unlog(x, scale, cap):
    v = math.expm1(min(np.float64(x), 1e3) * scale)
    if not v >= 0.0:  # negative or NaN
        return 0.0
    return min(v, cap)


@numba.njit(nogil=True, cache=True)
def _argmax(row, start, stop):
    best = start
    for j in range(start + 1, stop):
        if row[j] > row[best]:
            best = j
    return best - start


@numba.njit(nogil=True, cache=True)
def postprocess(model_id, raw, out):
    """Map raw outputs ``raw[n, k]`` of model ``model_id`` into ``out[n, 4]`` (API ranges)."""
    for i in range(raw.shape[0]):
        r = raw[i]
        if model_id == _WORKLOAD:  # workload: cpu, memory bytes, gpu, confidence
            out[i, 0] = _clip01(r[0])
            out[i, 1] = _unlog(r[1], MEM_LOG_SCALE, MAX_MEMORY_BYTES)
            out[i, 2] = _clip01(r[2])
            out[i, 3] = _clip01(r[3])
        elif model_id == _THREAT:  # threat: score, type, confidence, action
            score = _clip01(r[0])
            out[i, 0] = score
            out[i, 1] = 0.0 if score < 0.5 else np.float64(1 + _argmax(r, 2, 7))
            out[i, 2] = _clip01(r[12])
            out[i, 3] = np.float64(_argmax(r, 7, 12))
        elif model_id == _FAILURE:  # failure: probability, time ms or -1, confidence, type
            prob = _clip01(r[0])
            out[i, 0] = prob
            if prob < 0.5:
                out[i, 1] = -1.0
                out[i, 3] = 0.0
            else:
                out[i, 1] = _unlog(r[1], TIME_LOG_SCALE, MAX_TIME_MS)
                out[i, 3] = np.float64(1 + _argmax(r, 3, 8))
            out[i, 2] = _clip01(r[8])
        else:  # memory: next address, access probability, access type, confidence
            out[i, 0] = _clip01(r[0])
            out[i, 1] = _clip01(r[1])
            out[i, 2] = np.float64(_argmax(r, 2, 5))
            out[i, 3] = _clip01(r[5])
