"""What the daemon's compiled pass asks of the models, by model id: the one place that lists them.

The pass stages raw request slots; ``payload_views`` gives it one typed view of the
staging buffer per model (a tuple, in ``ModelId`` order), ``encode_rows`` validates and
encodes a model's staged rows, all at once (``_encode_rows``), ``forward`` (``models._forward``) runs a model of a bank
and ``postprocess`` maps its raw outputs. A fifth model is added here (and in kernel_abi),
never in the daemon.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernel_abi import PAYLOADS, REQUESTS, ModelId

from ._encode_rows import new_scratch as new_scratch  # the scratch encode_rows takes (re-exported)
from ._encode_rows import rows_failure, rows_memory, rows_threat, rows_workload
from ._spec import N_FEATURES, N_MODEL_SLOTS, N_RAW_OUTPUTS

#: Widths of the per-model feature and raw-output buffers the pass keeps (the widest model's).
MAX_FEATURES = max(N_FEATURES.values())
MAX_OUTPUTS = max(N_RAW_OUTPUTS.values())
#: Expected ``payload_len`` of a request, by model id (0: no such model).
PAYLOAD_LEN = np.array([0] * N_MODEL_SLOTS, np.int64)
for _m in ModelId:
    PAYLOAD_LEN[_m] = PAYLOADS[_m].itemsize

_W, _T, _F, _M = (int(m) for m in (ModelId.WORKLOAD, ModelId.THREAT, ModelId.FAILURE, ModelId.MEMORY))


def payload_views(staging: np.ndarray) -> tuple[np.ndarray, ...]:
    """One view of the staged request slots ``uint8[room, slot]`` per model, as its payload records."""
    room = staging.shape[0]
    return tuple(staging.view(REQUESTS[m]).reshape(room)["payload"] for m in ModelId)


@njit(nogil=True, cache=True)
def encode_rows(payloads, mid, rows, n, out, err, scratch):
    """Validate and encode staged rows ``rows[:n]`` as model ``mid`` into ``out[:n]``; ``err[r]``: 0 or the bad field.

    ``payloads`` is ``payload_views(staging)``, ``scratch`` a ``new_scratch(room)``. False
    for a model id with no encoder.
    """
    if mid == _W:
        rows_workload(payloads[0], rows, n, out, err, scratch)
    elif mid == _T:
        rows_threat(payloads[1], rows, n, out, err, scratch)
    elif mid == _F:
        rows_failure(payloads[2], rows, n, out, err, scratch)
    elif mid == _M:
        rows_memory(payloads[3], rows, n, out, err, scratch)
    else:
        return False
    return True
