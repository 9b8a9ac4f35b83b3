"""API fields to payload records: every malformed value is an InvalidFields naming its field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_abi import PAYLOADS, ModelId, hash_str
from shmd import InvalidFields
from shmd._codec import decode_outputs, encode_payload, model_id
from shmd.samples import SAMPLES

from ._oracle import SCHEMA, codec_problems, mutated


@pytest.mark.parametrize("model", list(SAMPLES))
def test_samples_encode(model: str) -> None:
    payload = encode_payload(model_id(model), SAMPLES[model])
    assert payload.dtype == PAYLOADS[model_id(model)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(SAMPLES)), st.data())
def test_codec_accepts_exactly_the_valid_bodies(model: str, data: st.DataObject) -> None:
    """Acceptance <=> validity, both ways: garbage accepted fails as surely as a valid body refused."""
    body = data.draw(mutated(model))
    want = codec_problems(model, body)
    try:
        encode_payload(model_id(model), body)
    except InvalidFields as err:
        assert want, f"refused a valid {model} body: {err}"
        assert err.field in want, f"refused {err.field!r} but the problem is {want}: {err}"
    else:
        assert not want, f"accepted an invalid {model} body: {want}"


@pytest.mark.parametrize("model", list(SAMPLES))
def test_every_required_field_missing_or_null_is_named(model: str) -> None:
    for key, _, _, required in SCHEMA[model]:
        for body in ({k: v for k, v in SAMPLES[model].items() if k != key}, {**SAMPLES[model], key: None}):
            if required:
                with pytest.raises(InvalidFields, match=rf"^{key}: is required$"):
                    encode_payload(model_id(model), body)
            else:
                encode_payload(model_id(model), body)


@pytest.mark.parametrize("model", list(SAMPLES))
def test_integer_fields_at_their_limits_and_one_past(model: str) -> None:
    for key, kind, args, _ in SCHEMA[model]:
        if kind != "integer":
            continue
        lo, hi = args
        for ok in (lo, hi, float(lo), lo + 1.0):
            encode_payload(model_id(model), {**SAMPLES[model], key: ok})
        for bad in (lo - 1, hi + 1, lo + 0.5, True):
            with pytest.raises(InvalidFields, match=rf"^{key}: must be an integer"):
                encode_payload(model_id(model), {**SAMPLES[model], key: bad})


def test_specific_refusals_name_field_and_rule() -> None:
    w = dict(SAMPLES["workload"])
    with pytest.raises(InvalidFields, match=r"^currentCpu: must be within ±3\.403e\+38 \(float32\)$"):
        encode_payload(ModelId.WORKLOAD, dict(w, currentCpu=10**400))
    with pytest.raises(InvalidFields, match=r"^agentId: must be valid Unicode text"):
        encode_payload(ModelId.WORKLOAD, dict(w, agentId="a\udc80"))
    with pytest.raises(InvalidFields, match=r"^anomalies\[0\]\.severity: must be one of low, medium, high, critical$"):
        encode_payload(ModelId.THREAT, dict(SAMPLES["threat"], anomalies=[{"type": "x", "severity": ["high"]}]))
    with pytest.raises(InvalidFields, match=r"^historicalGpu\[2\]: must be finite$"):
        encode_payload(ModelId.WORKLOAD, dict(w, historicalGpu=[0, 0, float("nan")] + [0] * 7))


def test_optional_fields_default_and_strings_travel_as_hashes() -> None:
    w = {k: v for k, v in SAMPLES["workload"].items() if k not in ("historicalGpu", "currentGpu")}
    p = encode_payload(ModelId.WORKLOAD, w)
    assert p["current_gpu"] == 0 and not p["historical_gpu"].any()
    assert p["agent_hash"] == hash_str("agent-123")
    t = encode_payload(ModelId.THREAT, dict(SAMPLES["threat"], historicalThreats=[0.5]))
    assert list(t["historical_threats"]) == pytest.approx([0.5] + [0] * 9)
    assert list(t["severity_counts"]) == [1, 0, 1, 0] and t["distinct_anomaly_types"] == 2


def test_outputs_decode_with_enum_names() -> None:
    assert decode_outputs(ModelId.THREAT, [0.9, 3, 0.8, 2]) == {
        "threatScore": 0.9, "threatType": 3, "threatTypeName": "denial_of_service", "confidence": 0.8,
        "recommendedAction": 2, "recommendedActionName": "throttle",
    }  # fmt: skip
    assert decode_outputs(ModelId.WORKLOAD, [0.5, 1234.0, 0.1, 0.9])["predictedMemory"] == 1234
