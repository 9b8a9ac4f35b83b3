"""REQUEST records built from API fields, RESPONSE records read back: shared by every Python caller.

``shmd.client`` and the HTTP shim (which reaches its channel through the C client)
build and read records the same way. Items go through the msgspec fast path
(``_fastcodec``) first and through the general codec (``_codec``, which names what
is wrong) only when it declines; answers of a batch are checked and turned into
dicts column by column.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

from kernel_abi import ABI_VERSION, PAYLOADS, REQ_NO_CACHE, REQUESTS, RESP_CACHE_HIT, RESPONSE, ModelId, Status

from . import _codec, _fastcodec, _wire
from ._errors import DaemonError, InternalError, error_for


def build_requests(
    mid: ModelId, items: Sequence[Mapping[str, Any]], *, submit_ns: int, deadline_ns: int = 0, no_cache: bool = False
) -> np.ndarray:
    """REQUEST records (of ``REQUESTS[mid]``) for ``items``; request ids left 0 for the sender to set.

    An invalid item raises InvalidFields (see ``_codec.encode_payloads``).
    """
    records = np.zeros(len(items), REQUESTS[mid])
    checked = _fastcodec.check_items(mid, items)
    flags = REQ_NO_CACHE if no_cache else 0
    if checked is not None and _fastcodec.pack_records(mid, checked, records, flags, deadline_ns):
        records["submit_ns"] = submit_ns
        return records
    records["payload"] = _codec.encode_payloads(mid, items)
    return _stamp(records, mid, submit_ns, deadline_ns, no_cache)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while a batch's temporaries are alive (restored after, if it was on).

    Building 256 records makes ~1,000 short-lived containers; a collection in the middle
    promotes the live ones, and the promoted pile sets off full collections of the
    whole heap (numba's, numpy's): 20-60 ms stalls every few batches of ``predict_many``
    (median 133k predictions/s, overall 85k; paused: 147k and 144k, worst batch 2.2 ms).
    The temporaries die before the pause ends, so nothing is promoted.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def requests_for(
    mid: ModelId, payloads: np.ndarray, *, submit_ns: int, deadline_ns: int = 0, no_cache: bool = False
) -> np.ndarray:
    """REQUEST records carrying ``payloads`` (records of ``PAYLOADS[mid]``); request ids left 0."""
    records = np.zeros(len(payloads), REQUESTS[mid])
    records["payload"] = payloads
    return _stamp(records, mid, submit_ns, deadline_ns, no_cache)


def _stamp(records: np.ndarray, mid: ModelId, submit_ns: int, deadline_ns: int, no_cache: bool) -> np.ndarray:
    records["model_id"] = mid
    records["abi_version"] = ABI_VERSION
    records["payload_len"] = PAYLOADS[mid].itemsize
    records["flags"] = REQ_NO_CACHE if no_cache else 0
    records["submit_ns"] = submit_ns
    records["deadline_ns"] = deadline_ns
    return records


def pack_request(mid: ModelId, fields: Mapping[str, Any], buf: Any, *, flags: int = 0, deadline_ns: int = 0) -> None:
    """Write the REQUEST record for one item at the start of ``buf`` (id and submit time 0): no allocation
    but the values' own. An invalid item raises InvalidFields."""
    if not _fastcodec.pack_item(mid, fields, buf, flags, deadline_ns):
        _wire.PAYLOAD[mid].pack_into(buf, _codec.payload_values(mid, fields), flags, deadline_ns)


def read_answer(mid: ModelId, buf: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The API ``prediction`` of the RESPONSE record at the start of ``buf``, or raise its DaemonError."""
    result = _ANSWER_READERS[mid](buf)
    if result is not None:
        return result
    status, flags, version, outputs = _wire.read(buf, 0)
    if status == Status.OK:
        return prediction(mid, outputs, flags, version)
    return read_response(mid, np.frombuffer(buf, RESPONSE, count=1)[0], fields)


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
    return prediction(mid, resp["outputs"], int(resp["flags"]), int(resp["model_version"]))


def prediction(mid: ModelId, outputs: Sequence[float], flags: int, version: int) -> dict[str, Any]:
    """The API ``prediction`` of an OK response's ``outputs``, ``flags`` and ``model_version``."""
    result = _codec.decode_outputs(mid, outputs)
    result["cacheHit"] = bool(flags & RESP_CACHE_HIT)
    result["modelVersion"] = version
    return result


def predictions(
    mid: ModelId, responses: np.ndarray, items: Sequence[Mapping[str, Any]], *, return_exceptions: bool = False
) -> list[Any]:
    """The API ``prediction`` of each RESPONSE record, in order (``items``: the fields sent).

    Raises the first refused item's DaemonError (its ``item`` is the index in a batch of
    more than one), unless ``return_exceptions`` puts the errors in the list.
    """
    fast = columns(mid, responses)
    if fast is not None:
        return fast
    results: list[Any] = []
    for i, resp in enumerate(responses):
        try:
            results.append(read_response(mid, resp, items[i]))
        except DaemonError as err:
            results.append(err)
    return results if return_exceptions else raise_first(results)


def raise_first(results: list[Any]) -> list[Any]:
    """``results`` of ``predictions(..., return_exceptions=True)`` when none is an error, else raise the first
    (its ``item`` the index, in a batch of more than one): what ``predictions`` raises without ``return_exceptions``."""
    for i, result in enumerate(results):
        if isinstance(result, DaemonError):
            if len(results) > 1:
                result.item = i
            raise result
    return results


def columns(mid: ModelId, responses: np.ndarray) -> list[dict[str, Any]] | None:
    """``prediction`` of every RESPONSE record, built column by column (numpy checks and converts
    each output column at once; ~0.5 µs an answer against ~4 µs one by one); None unless every
    one is OK and every output one a model can produce (then ``read_response`` names the first
    that is not). Used by ``Client``, ``AsyncClient`` and the HTTP shim's batches."""
    outputs = responses["outputs"].astype(np.float64)
    if not (responses["status"] == Status.OK).all() or not np.isfinite(outputs).all():
        return None
    keys: list[str] = []
    columns: list[list[Any]] = []
    for k, (name, names, is_bytes) in enumerate(_codec.OUTPUT_SPECS[mid]):
        column = outputs[:, k]
        if names is not None:
            index = np.trunc(column)
            if not ((index >= 0) & (index < len(names))).all():
                return None
            ints = index.astype(np.int64).tolist()
            keys += [name + "Name", name]
            columns += [[names[i] for i in ints], ints]
        elif is_bytes:
            if not ((column >= 0) & (column < 2**63)).all():
                return None
            keys.append(name)
            columns.append(column.astype(np.int64).tolist())
        else:
            keys.append(name)
            columns.append(column.tolist())
    keys += ["cacheHit", "modelVersion"]
    columns.append(((responses["flags"] & RESP_CACHE_HIT) != 0).tolist())
    columns.append(responses["model_version"].tolist())
    return list(map(_dict_maker(tuple(keys)), *columns))


def _answer_reader(mid: ModelId) -> Callable[[Any], dict[str, Any] | None]:
    """``read(buf)``: the ``prediction`` of the OK RESPONSE record at the start of ``buf``, or None
    unless its status is OK and every output one the model can produce (then ``read_response``
    raises what is wrong): ``prediction``'s rules in one generated expression per model, ~3x
    faster than unpacking, checking and filling the dict step by step. Made from our own output
    names only."""
    fields = {"status": "status", "flags": "flags", "model_version": "version", "outputs": "*outputs"}
    targets = ", ".join(fields.get(name, "_") for name in _wire.RESPONSE_FIELDS)
    checks, body = ["status == OK"], []
    for k, (name, names, is_bytes) in enumerate(_codec.OUTPUT_SPECS[mid]):
        value = f"outputs[{k}]"
        if names is not None:  # an enum: its index (truncated, as prediction() does) and name
            checks += [f"isfinite({value})", f"0 <= int({value}) < {len(names)}"]
            body += [f"{name + 'Name'!r}: names{k}[int({value})]", f"{name!r}: int({value})"]
        elif is_bytes:
            checks.append(f"0 <= {value} < {2**63}")
            body.append(f"{name!r}: int({value})")
        else:
            checks.append(f"isfinite({value})")
            body.append(f"{name!r}: {value}")
    body += ["'cacheHit': flags & RESP_CACHE_HIT != 0", "'modelVersion': version"]
    env = {f"names{k}": names for k, (_, names, _) in enumerate(_codec.OUTPUT_SPECS[mid]) if names is not None}
    env.update(unpack_from=_wire.RESPONSE_STRUCT.unpack_from, OK=int(Status.OK), isfinite=math.isfinite,
               RESP_CACHE_HIT=RESP_CACHE_HIT)  # fmt: skip
    source = (f"def read(buf):\n    {targets} = unpack_from(buf)\n"
              f"    return {{{', '.join(body)}}} if {' and '.join(checks)} else None\n")  # fmt: skip
    exec(source, env)  # our own output names, never input
    return env["read"]


_ANSWER_READERS = {mid: _answer_reader(mid) for mid in ModelId}


@lru_cache(maxsize=16)
def _dict_maker(keys: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """``f(v0, v1, ...) -> {keys[0]: v0, keys[1]: v1, ...}``: a dict display, ~2x faster per answer than
    ``dict(zip(keys, row))`` (the keys are the fixed output names of one model)."""
    args = ", ".join(f"v{i}" for i in range(len(keys)))
    body = ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys))
    return eval(f"lambda {args}: {{{body}}}")  # the keys are our own output names, never input


__all__ = ["build_requests", "columns", "gc_paused", "pack_request", "prediction", "predictions", "raise_first",
           "read_answer", "read_response", "requests_for"]  # fmt: skip
