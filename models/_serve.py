"""What the daemon's compiled pass asks of the models, by model id: the one place that lists them.

The pass stages raw request slots; ``payload_views`` gives it one typed view of the
staging buffer per model (a tuple, in ``ModelId`` order), ``encode`` validates and encodes
staged row ``j`` as model ``mid``, ``forward`` (``models._forward``) runs a model of a bank
and ``postprocess`` maps its raw outputs. A fifth model is added here (and in kernel_abi),
never in the daemon.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernel_abi import PAYLOADS, REQUESTS, ModelId

from ._encode import encode_failure, encode_memory, encode_threat, encode_workload
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
def encode(payloads, mid, j, out):
    """Validate and encode staged row ``j`` as model ``mid`` into ``out``; 0 or the bad field (1-based).

    ``payloads`` is ``payload_views(staging)``; -1 for a model id with no encoder.
    """
    if mid == _W:
        return encode_workload(payloads[0], j, out)
    if mid == _T:
        return encode_threat(payloads[1], j, out)
    if mid == _F:
        return encode_failure(payloads[2], j, out)
    if mid == _M:
        return encode_memory(payloads[3], j, out)
    return -1
