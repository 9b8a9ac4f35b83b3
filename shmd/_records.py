"""REQUEST records built from API fields, RESPONSE records read back: shared by every Python caller.

``shmd.client`` and the HTTP shim (which reaches its channel through the C client)
build and read records the same way; this module needs numpy and kernel_abi only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUESTS, RESP_CACHE_HIT, ModelId, Status

from . import _codec
from ._errors import InternalError, error_for


def build_requests(
    mid: ModelId, items: Sequence[Mapping[str, Any]], *, submit_ns: int, deadline_ns: int = 0, no_cache: bool = False
) -> np.ndarray:
    """REQUEST records (of ``REQUESTS[mid]``) for ``items``; request ids left 0 for the sender to set.

    An invalid item raises InvalidFields (see ``_codec.encode_payloads``).
    """
    payloads = _codec.encode_payloads(mid, items)
    return requests_for(mid, payloads, submit_ns=submit_ns, deadline_ns=deadline_ns, no_cache=no_cache)


def requests_for(
    mid: ModelId, payloads: np.ndarray, *, submit_ns: int, deadline_ns: int = 0, no_cache: bool = False
) -> np.ndarray:
    """REQUEST records carrying ``payloads`` (records of ``PAYLOADS[mid]``); request ids left 0."""
    records = np.zeros(len(payloads), REQUESTS[mid])
    records["payload"] = payloads
    records["model_id"] = mid
    records["abi_version"] = ABI_VERSION
    records["payload_len"] = PAYLOADS[mid].itemsize
    records["flags"] = REQ_NO_CACHE if no_cache else 0
    records["submit_ns"] = submit_ns
    records["deadline_ns"] = deadline_ns
    return records


def read_response(
    mid: ModelId, resp: np.ndarray, fields: Mapping[str, Any] | None = None, *, payload: np.ndarray | None = None
) -> dict[str, Any]:
    """The API ``prediction`` of one RESPONSE record, or raise the DaemonError its status names.

    The item's API ``fields``, or the ``payload`` record sent, lets an INVALID_INPUT name the
    API field and the rule.
    """
    status = int(resp["status"])
    if status != Status.OK:
        err = error_for(status, int(resp["model_id"]), int(resp["error_field"]))
        if status == Status.INVALID_INPUT:
            sent = _codec.encode_payload(mid, fields) if payload is None else payload
            detail = _codec.describe_invalid(mid, sent, err.field)
            if detail is None:  # valid by the encoders' own rules: the daemon is at fault, not the caller
                raise InternalError(
                    Status.INTERNAL, mid, err.field,
                    f"the daemon rejected input its encoders accept (error_field={int(resp['error_field'])})",
                )  # fmt: skip
            err.field, err.detail = detail.field, detail.rule
        raise err
    return prediction(mid, resp["outputs"], int(resp["flags"]))


def prediction(mid: ModelId, outputs: Sequence[float], flags: int) -> dict[str, Any]:
    """The API ``prediction`` of an OK response's ``outputs`` and ``flags``."""
    result = _codec.decode_outputs(mid, outputs)
    result["cacheHit"] = bool(flags & RESP_CACHE_HIT)
    return result


__all__ = ["build_requests", "prediction", "read_response", "requests_for"]
