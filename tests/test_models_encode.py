"""Encoders, validation and post-processing of the four models (no TensorFlow)."""

from __future__ import annotations

import hashlib
import math
import platform
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numba import njit

import kernel_abi as ka
from kernel_abi import ModelId
from models import N_FEATURES, N_RAW_OUTPUTS, encode_batch, postprocess, validate
from models._data import GENERATORS
from models._encode import (
    ENCODERS,
    threat_history_stats,
    threat_history_stats_ordered,
)
from models._encode_rows import ROW_ENCODERS, new_scratch
from models._log1p import (
    _off_main_path,
    log1p_column,
    log1p_exact_column,
    log1p_exact_into,
    log1p_into,
    log1p_uint_into,
    log1p_uint_main,
)
from models._serve import MAX_FEATURES
from models._simd import all_within
from models._spec import RANGES, field_index

MIDS = list(ModelId)


def _valid(mid: ModelId, n: int = 64, seed: int = 0) -> np.ndarray:
    return GENERATORS[mid](n, seed)[0]


@pytest.mark.parametrize("mid", MIDS)
def test_encoder_reads_non_contiguous_staging_view(mid):
    """The daemon passes staging.view(REQUESTS[mid])["payload"] (stride 320): same features as contiguous."""
    rec = _valid(mid)
    staging = np.zeros(len(rec), ka.REQUEST)
    view = staging.view(ka.REQUESTS[mid])["payload"]
    view[:] = rec
    assert view.strides[0] == ka.REQUEST_SLOT_SIZE and not view.flags["C_CONTIGUOUS"]
    f_view, e_view = encode_batch(mid, view)
    f_rec, e_rec = encode_batch(mid, rec)
    assert not e_view.any() and not e_rec.any()
    assert np.array_equal(f_view, f_rec)
    assert np.isfinite(f_rec).all() and f_rec.shape == (len(rec), N_FEATURES[mid])
    out = np.zeros(N_FEATURES[mid], np.float32)
    assert ENCODERS[mid](view, 3, out) == 0
    assert np.array_equal(out, f_rec[3])


def test_memory_timing_features_are_finite_and_scale_free_for_any_valid_timestamps():
    """Timestamps are any finite value >= 0: gaps of 1.7e308 overflowed the sum to inf and
    made two features NaN (the HTTP fuzz's record; the compiled pass then raised, see
    test_models_compiled). Ratios of gaps are what is encoded, so scaling the clock by a
    power of two changes nothing."""
    rec = _valid(ModelId.MEMORY, 4, 1).copy()
    rec["access_timestamps"][0] = [0.0 if k % 2 == 0 else 1.7e308 for k in range(20)]
    rec["access_timestamps"][1] = np.finfo(np.float64).max
    rec["access_timestamps"][2] = np.linspace(0.0, np.finfo(np.float64).max, 20)
    rec[3] = rec[2]
    rec["access_timestamps"][3] *= 2.0**-600  # the same clock, in a unit 2**600 times longer
    x, err = encode_batch(ModelId.MEMORY, rec)
    assert not err.any() and np.isfinite(x).all(), np.argwhere(~np.isfinite(x))
    assert x[1, 64] == 0.0 and x[1, 65] == 0.0  # a constant clock: ratio 1, no spread
    np.testing.assert_array_equal(x[2], x[3])
    assert -1.0 <= x[0, 64] <= 1.0 and 0.0 <= x[0, 65] <= 1.0


def _break(rec: np.ndarray, mid: ModelId, k: int) -> None:
    """Make record ``rec`` invalid in the k-th checked field (cycling): NaN, or an integer above its range."""
    kinds = {name: np.asarray(rec[name]).dtype.kind for name in RANGES[mid]}
    names = sorted(name for name in RANGES[mid] if kinds[name] == "f" or math.isfinite(RANGES[mid][name][1]))
    name = names[k % len(names)]
    value = math.nan if kinds[name] == "f" else int(RANGES[mid][name][1]) + 1
    if rec[name].ndim:
        rec[name][k % len(rec[name])] = value
    else:
        rec[name] = value


@pytest.mark.parametrize("mid", MIDS)
def test_row_encoders_match_the_per_record_encoders_bit_for_bit(mid):
    """What the pass runs: a model's staged rows (a sparse, increasing subset of the staging
    view, one in five invalid) encoded at once into a batch of MAX_FEATURES-wide rows, with
    a scratch left dirty by a larger batch. Every row must carry exactly the features and
    error field of its own record, as the per-record encoder gives them."""
    rec = _valid(mid, 96, 5).copy()
    for i in range(0, len(rec), 5):
        _break(rec[i], mid, i // 5)
    staging = np.zeros(len(rec), ka.REQUEST)
    view = staging.view(ka.REQUESTS[mid])["payload"]
    view[:] = rec
    scratch = new_scratch(len(rec))
    scratch[:] = np.nan
    rng = np.random.default_rng(3)
    for n in (len(rec), 61, 1):
        rows = np.sort(rng.choice(len(rec), n, replace=False)).astype(np.int64)
        out = np.zeros((len(rec), MAX_FEATURES), np.float32)[:, : N_FEATURES[mid]]
        err = np.full(len(rec), -1, np.int32)
        ROW_ENCODERS[mid](view, rows, n, out, err, scratch)
        ref = np.zeros(N_FEATURES[mid], np.float32)
        for r, j in enumerate(rows):
            expect = ENCODERS[mid](view, j, ref)
            assert err[r] == expect, (n, r, j)
            if expect == 0:
                assert out[r].tobytes() == ref.tobytes(), (n, r, j, np.flatnonzero(out[r] != ref))
        assert (err[:n] != 0).sum() == sum(j % 5 == 0 for j in rows)  # the broken ones, and only those


def test_log1p_is_libm_s_for_every_kind_of_input():
    """The encoders' vectorisable log1p against libm's over the reduction's cases: tiny x,
    x < 0.41 (no reduction), 2**k - 1 and its neighbours (|f| < 2**-20, f = 0), x >= 2**53,
    the largest double. Bit for bit where glibc runs its FMA build (x86 with FMA and AVX2,
    this project's hosts); within 1 ulp on any libm."""
    rng = np.random.default_rng(11)
    ks = 2.0 ** np.arange(1, 1024)
    points = [0.0, -0.0, 5e-324, 2.0**-60, 2.0**-54, 2.0**-40, 2.0**-29, 0.41421, 0.41422, 2.0**53,
              np.finfo(np.float64).max]  # fmt: skip
    edges = np.concatenate([points, ks - 1, np.nextafter(ks - 1, 0), np.nextafter(ks - 1, np.inf)])
    x = np.concatenate([edges, rng.uniform(0, 1, 50_000), np.exp(rng.uniform(-700, 709, 100_000)),
                        rng.integers(0, 2**63, 50_000).astype(np.float64)])  # fmt: skip
    x = x[np.isfinite(x)]
    want = np.array([math.log1p(v) for v in x])
    got = x.copy()
    log1p_column(got, len(got))
    _assert_libm_s(x, got, want)
    into = np.full_like(x, np.nan)
    log1p_into(x, into, len(x))  # mixed: some 1 + x inexact, so every value takes the full path
    _assert_libm_s(x, into, want)


def _assert_libm_s(x: np.ndarray, got: np.ndarray, want: np.ndarray) -> None:
    """Within 1 ulp of libm's log1p everywhere; bit for bit where glibc runs its FMA build."""
    ulps = np.abs(got.view(np.int64) - want.view(np.int64))
    assert ulps.max() <= 1, x[np.argmax(ulps)]
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    if "fma" in flags and "avx2" in flags:
        assert not ulps.any(), x[ulps != 0][:5]


def test_log1p_into_takes_the_exact_path_only_where_it_gives_libm_s_bits():
    """``log1p_into`` skips glibc's correction when every 1 + x of a column is exact: memory's
    distances (differences of float32 addresses, in lines), integers, 2**k - 1 and their
    neighbours, in columns of one kind and in columns with one inexact value."""
    rng = np.random.default_rng(13)
    addr = rng.random((2, 20_000)).astype(np.float32).astype(np.float64)
    lines = np.abs(addr[0] - addr[1]) * 2.0**16
    ks = 2.0 ** np.arange(0, 60)
    ints = np.concatenate([rng.integers(0, 2**20, 20_000).astype(np.float64), ks - 1, ks, ks + 1, [0.0, -0.0, 2.0**53]])
    inexact = np.array([0.1, 1e-17, 1.0 + 2.0**-30, 3e5 + 1e-7, 2.0**60 + 2.0**9])
    for col in (lines, ints, np.concatenate([lines, inexact[:1]]), np.concatenate([ints, inexact]), inexact):
        want = np.array([math.log1p(v) for v in col])
        got = np.full_like(col, np.nan)
        log1p_into(col, got, len(col))
        _assert_libm_s(col, got, want)
        for i in range(0, len(col), 997):  # one value alone: exact ones take the exact path
            one = np.full(1, np.nan)
            log1p_into(col[i : i + 1], one, 1)
            _assert_libm_s(col[i : i + 1], one, want[i : i + 1])


def test_log1p_exact_is_libm_s_where_one_plus_x_is_exact():
    """The encoders' log1p without glibc's correction for a rounded 1 + x, on what they give it:
    float32 values (every exponent, 2**k - 1 neighbours) and integers up to 2**64 (uint64
    fields). Bit for bit with libm on FMA hosts; within 1 ulp on any libm."""
    rng = np.random.default_rng(12)
    f32 = np.concatenate([
        np.exp(rng.uniform(-103, 88, 100_000)), rng.uniform(0, 1, 20_000), 2.0 ** np.arange(-149, 128),
        np.nextafter((2.0 ** np.arange(1, 128) - 1).astype(np.float32), np.float32(np.inf)),
        np.nextafter((2.0 ** np.arange(1, 128) - 1).astype(np.float32), np.float32(0)),
    ]).astype(np.float32).astype(np.float64)  # fmt: skip
    powers = 2.0 ** np.arange(0, 64)
    ints = np.concatenate([rng.integers(0, 2**63, 50_000).astype(np.float64), rng.integers(0, 2**20, 20_000),
                           powers, powers - 1, powers + 1, [0.0, -0.0]])  # fmt: skip
    x = np.concatenate([f32, ints])
    x = x[np.isfinite(x)]
    got = x.copy()
    log1p_exact_column(got, len(got))  # mixed: some values are off glibc's general path, so every path
    want = np.array([math.log1p(v) for v in x])
    into = np.full_like(x, np.nan)
    log1p_exact_into(x, into, len(x))
    _assert_libm_s(x, into, want)
    for i in range(len(x)):  # columns of one value: those on the general path take it alone
        one = x[i : i + 1].copy()
        log1p_exact_column(one, 1)
        alone = np.full(1, np.nan)
        log1p_exact_into(x[i : i + 1], alone, 1)
        assert one[0] == alone[0]
        assert one[0] == want[i] or abs(int(one.view(np.int64)[0]) - int(want[i : i + 1].view(np.int64)[0])) <= 1
        got[i] = one[0]
    _assert_libm_s(x, got, want)


#: uint64 values whose float64 is >= 2**53 and where glibc's general path with 1 + x rounded gives
#: other bits than glibc (which takes x itself there): log1p_uint_into must fall back on them.
_UINT_OFF_BITS = (9014305450117110, 13139462812328406)


def _uint_column(values: list[int]) -> np.ndarray:
    """float64 of uint64 values, as workload's encoder converts them."""
    return np.array(values, dtype=np.uint64).astype(np.float64)


#: 1 + x within 2**-20 of 2**30 but not it, from above (the low case's m == 0) and below (m >= 0xFFFFD).
_UINT_SHORT_SERIES = (2**30, 2**30 + 2**9, 2**30 - 2, 2**30 - 2**9)


def _near_power_of_two(k: int) -> st.SearchStrategy[int]:
    """2**k - 1 + d, |d| <= 2**(k - 19): 1 + x within 2**-19 of 2**k, a quarter of them within
    glibc's short-series window on either side."""
    span = 2 ** max(k - 19, 0)
    return st.integers(-span, span).map(lambda d: min(max(2**k - 1 + d, 0), 2**64 - 1))


# workload's uint64 memory values: anything up to 2**64 - 1, and especially 2**k - 1 + d for
# small |d| relative to 2**k (1 + x within 2**-20 of a power of two: glibc's short series).
_uints = st.one_of(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**20),
    st.integers(0, 63).flatmap(_near_power_of_two),
    st.sampled_from([0, 1, 2, 2**53 - 1, 2**53, 2**53 + 2, 2**63, 2**64 - 1, *_UINT_OFF_BITS, *_UINT_SHORT_SERIES]),
)  # fmt: skip


@njit  # not cached: numba would not see edits of the _log1p functions it inlines
def _uint_main_and_off(x):
    y = np.empty_like(x)
    off = np.zeros(len(x), np.bool_)
    ref = np.zeros(len(x), np.bool_)
    for i in range(len(x)):
        y[i], off[i] = log1p_uint_main(x[i])
        ref[i] = _off_main_path(x[i]) or x[i] >= 2.0**53
    return y, off, ref


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_uints, min_size=1, max_size=40))
@example(values=[12345, *_UINT_OFF_BITS])
def test_log1p_uint_into_is_libm_s_on_uint64_values(values):
    """Workload's log1p column (``log1p_uint_into``: glibc's general path without the selects
    integers never need, the column again by ``log1p_exact_into`` if any value is off that path)
    against libm, bit for bit on FMA hosts: in columns of hypothesis' values and each value
    alone. The domain is float64 of uint64 (no subnormals, negatives or -0.0: none is one)."""
    x = _uint_column(values)
    want = np.array([math.log1p(v) for v in x])
    got = np.full_like(x, np.nan)
    log1p_uint_into(x, got, len(x))
    _assert_libm_s(x, got, want)
    for i in range(len(x)):
        one = np.full(1, np.nan)
        log1p_uint_into(x[i : i + 1], one, 1)
        _assert_libm_s(x[i : i + 1], one, want[i : i + 1])


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_uints, min_size=1, max_size=40))
@example(values=list(_UINT_SHORT_SERIES))
def test_log1p_uint_main_flags_exactly_where_glibc_takes_another_path(values):
    """``log1p_uint_main``'s ``off`` (its cheaper test on f) is glibc's own choice of path
    (``_off_main_path``) or x >= 2**53, value by value, and where it is not set its value is
    libm's. The listed values >= 2**53 need the fallback (the general path gives other bits)."""
    x = _uint_column([*values, *_UINT_OFF_BITS])
    main, off, ref = _uint_main_and_off(x)
    assert np.array_equal(off, ref), x[off != ref]
    on = ~off
    assert off[-len(_UINT_OFF_BITS) :].all()
    if on.any():
        want = np.array([math.log1p(v) for v in x[on]])
        _assert_libm_s(x[on], main[on], want)


@pytest.mark.parametrize(
    ("mid", "field", "column"),
    [(ModelId.THREAT, "average_latency", 0), (ModelId.THREAT, "message_frequency", 3),
     (ModelId.THREAT, "time_since_last_threat", 17), (ModelId.FAILURE, "time_since_last_failure", 27)],
)  # fmt: skip
def test_negative_zero_is_valid_and_encoded_as_libm_s_log1p(mid, field, column):
    """-0.0 passes validation (-0.0 >= 0) and glibc's log1p(-0.0) is -0.0, so the feature is -0.0,
    as the encoders gave it before they were vectorised. The reduction read -0.0's high word as a
    huge value (feature 2.0 in the pass) and the per-record encoder divided by it (ZeroDivisionError)."""
    rec = _valid(mid, 4, 9).copy()
    rec[field][1] = -0.0
    x, err = encode_batch(mid, rec)
    assert not err.any()
    assert x[1, column] == 0.0 and np.signbit(x[1, column])
    out = np.zeros_like(x)
    row_err = np.ones(len(rec), np.int32)
    ROW_ENCODERS[mid](rec, np.arange(len(rec)), len(rec), out, row_err, new_scratch(len(rec)))
    assert not row_err.any() and out.tobytes() == x.tobytes()


@pytest.mark.parametrize("mid", MIDS)
def test_every_value_of_every_array_field_is_checked(mid):
    """Array fields are checked as one vector each: NaN (floats) or one above the range
    (integers) in any position of any checked array field must name that field."""
    base = _valid(mid, 1, 4)
    for name in RANGES[mid]:
        if base[name].ndim != 2:  # (records, length): an array field
            continue
        hi = RANGES[mid][name][1]
        kind = base[name].dtype.kind
        if kind != "f" and not math.isfinite(hi):
            continue
        for j in range(base[name].shape[1]):
            for bad in ([math.nan, math.inf, -1.0] + ([hi * 1.5 + 1] if math.isfinite(hi) else [])
                        if kind == "f" else [int(hi) + 1]):  # fmt: skip
                rec = base.copy()
                rec[name][0, j] = bad
                _, err = encode_batch(mid, rec)
                row_err = np.zeros(1, np.int32)
                ROW_ENCODERS[mid](rec, np.zeros(1, np.int64), 1, np.zeros((1, N_FEATURES[mid]), np.float32), row_err,
                                  new_scratch(1))  # fmt: skip
                assert err[0] == row_err[0] == field_index(mid, name), (name, j, bad)


@njit
def _threat_stats(payloads, i):
    h = payloads[i].historical_threats
    return np.array(threat_history_stats(h)), np.array(threat_history_stats_ordered(h))


@pytest.mark.parametrize("mid", [ModelId.THREAT])
def test_history_sums_minima_and_maxima_are_the_left_to_right_loops_bit_for_bit(mid):
    """Sums of a history are taken in vector order only where every partial sum is exact;
    histories with tiny, subnormal or -0.0 values (where the order changes the bits, e.g.
    1.0 then many 2**-53: left to right they vanish, pairwise they do not) take the loop."""
    name = "historical_health" if mid == ModelId.FAILURE else "historical_threats"
    rng = np.random.default_rng(21)
    rec = _valid(mid, 400, 6).copy()
    width = rec[name].shape[1]
    odd = np.array([0.0, -0.0, 1.0, 2.0**-24, np.nextafter(np.float32(2.0**-24), np.float32(0)), 2.0**-53, 2.0**-100,
                    1e-45, 0.5 + 2.0**-24, 1.0 - 2.0**-24], np.float32)  # fmt: skip
    for i in range(len(rec)):
        kind = i % 4
        if kind == 1:  # a few odd values at random places
            places = rng.choice(width, 3, replace=False)
            rec[name][i, places] = rng.choice(odd, 3)
        elif kind == 2:  # only odd values
            rec[name][i] = rng.choice(odd, width)
        elif kind == 3:  # a large value, then many that vanish against it left to right
            rec[name][i] = np.float32(2.0 ** -rng.integers(20, 60))
            rec[name][i, rng.integers(0, width)] = 1.0
    fast = 0
    for i in range(len(rec)):
        got, want = _threat_stats(rec, i)
        assert got.tobytes() == want.tobytes(), (i, rec[name][i], got, want)
        h = rec[name][i]
        fast += bool((((h == 0) & ~np.signbit(h)) | (h >= 2.0**-24)).all())
    assert 100 < fast < len(rec) - 100  # both ways taken


# sha256 of encode_batch's features and error fields for _odd_records(mid), as the encoders
# gave them before they were vectorised (39a1ee7): the shipped models were trained on these.
FEATURE_DIGESTS = {
    ModelId.WORKLOAD: "18cf76737d56b2275b2eb5a8243ca83f648426c621d04eba1b0212edda772066",
    ModelId.THREAT: "a4f906ed72dc18a85c0e6c8acce35a0f99799ce8bddbcf640aa00b5dd8ec9a5f",
    ModelId.FAILURE: "e0091e9c140626be1b4219c2778075f556e0fdf0e374c280ff01e86758db3de3",
    ModelId.MEMORY: "3f1f6cc4287c2b95a0ca1943805eb3b6d91760752bb4890325a93e9287fd3304",
}


def _odd_records(mid: ModelId) -> np.ndarray:
    """3,000 generated records, every 7th with 3 odd values (+-0, 2**-24, 2**-53, 2**-100, subnormal, 1)
    in its float array fields (where the range allows them), every 11th with 1.0 among tiny values."""
    rec = GENERATORS[mid](3000, 17)[0].copy()
    rng = np.random.default_rng(5)
    odd = np.array([0.0, -0.0, 2.0**-24, 2.0**-53, 2.0**-100, 1e-45, 1.0], np.float32)
    for name in RANGES[mid]:
        col = rec[name]
        if col.dtype.kind != "f" or col.ndim != 2:
            continue
        lo, hi = RANGES[mid][name]
        vals = odd[(odd >= lo) & (odd <= hi)] if np.isfinite(hi) else odd
        for i in range(0, len(rec), 7):
            col[i, rng.integers(0, col.shape[1], 3)] = rng.choice(vals, 3)
        for i in range(3, len(rec), 11):  # one large value among tiny ones: the order of a sum shows
            col[i] = np.float32(2.0 ** -rng.integers(20, 60))
            col[i, rng.integers(0, col.shape[1])] = 1.0
    return rec


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc",
                    reason="digests of features computed with glibc's libm on x86-64")  # fmt: skip
@pytest.mark.parametrize("mid", MIDS)
def test_features_are_bit_for_bit_those_the_models_were_trained_on(mid):
    """The encoders are rewritten for speed (vector checks, sums, log1p paths) but must give
    the same bits as before; the per-record and row encoders are compared to each other
    elsewhere, this compares them with the encoders' output before the rewrite."""
    x, err = encode_batch(mid, _odd_records(mid))
    assert hashlib.sha256(x.tobytes() + err.tobytes()).hexdigest() == FEATURE_DIGESTS[mid]


@pytest.mark.parametrize("mid", MIDS)
def test_generator_is_reproducible_from_seed(mid):
    a, b, c = _valid(mid, 50, 1), _valid(mid, 50, 1), _valid(mid, 50, 2)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def _corrupt(draw, mid: ModelId):
    """A valid record with one checked field set to NaN/Inf or just outside its range."""
    rec = _valid(mid, 8, draw(st.integers(0, 3)))[draw(st.integers(0, 7))].copy()
    name = draw(st.sampled_from(sorted(RANGES[mid])))
    lo, hi = RANGES[mid][name]
    kind = rec[name].dtype.kind if rec[name].ndim else np.asarray(rec[name]).dtype.kind
    choices = []
    if kind == "f":
        choices += [math.nan, math.inf, -math.inf]
        if math.isfinite(hi):
            choices.append(hi + 0.5)
        if math.isfinite(lo):
            choices.append(lo - 0.5)
    elif math.isfinite(hi) and hi + 1 <= np.iinfo(np.asarray(rec[name]).dtype).max:
        choices.append(hi + 1)
    if not choices:
        return rec, None
    value = draw(st.sampled_from(choices))
    if np.ndim(rec[name]):
        rec[name][draw(st.integers(0, len(rec[name]) - 1))] = value
    else:
        rec[name] = value
    return rec, name


@pytest.mark.parametrize("mid", MIDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_compiled_error_field_matches_python_reasons(mid, data):
    rec, name = _corrupt(data.draw, mid)
    arr = np.array([rec], dtype=ka.PAYLOADS[mid])
    _, err = encode_batch(mid, arr)
    _, row_err = encode_batch(mid, arr)
    ROW_ENCODERS[mid](arr, np.zeros(1, np.int64), 1, np.zeros((1, N_FEATURES[mid]), np.float32), row_err,
                      new_scratch(1))  # fmt: skip
    assert row_err[0] == err[0]  # the pass's encoder names the same field
    problems = validate(mid, arr[0])
    if name is None:
        assert err[0] == 0 and problems == []
        return
    assert name in [f for f, _ in problems]
    assert err[0] == field_index(mid, problems[0][0])
    assert ka.payload_field_name(mid, int(err[0])) == problems[0][0]


def test_validate_reasons_name_field_and_value():
    rec = _valid(ModelId.WORKLOAD, 1)
    rec[0]["historical_cpu"][3] = np.nan
    rec[0]["time_of_day"] = 24
    problems = validate(ModelId.WORKLOAD, rec[0])
    assert problems[0] == ("historical_cpu", "historical_cpu[3]=nan is not a finite number")
    assert problems[1] == ("time_of_day", "time_of_day=24 is out of range: must be in [0, 23]")
    _, err = encode_batch(ModelId.WORKLOAD, rec)
    assert err[0] == field_index(ModelId.WORKLOAD, "historical_cpu")


def test_threat_cross_field_checks():
    rec = _valid(ModelId.THREAT, 1)
    rec[0]["anomaly_count"] = 5
    rec[0]["severity_counts"] = [1, 1, 1, 1]
    rec[0]["distinct_anomaly_types"] = 2
    assert validate(ModelId.THREAT, rec[0]) == [
        ("severity_counts", "severity_counts sum to 4 but anomaly_count=5")
    ]
    assert encode_batch(ModelId.THREAT, rec)[1][0] == field_index(ModelId.THREAT, "severity_counts")
    rec[0]["severity_counts"] = [2, 1, 1, 1]
    rec[0]["distinct_anomaly_types"] = 6
    assert validate(ModelId.THREAT, rec[0])[0][0] == "distinct_anomaly_types"
    assert encode_batch(ModelId.THREAT, rec)[1][0] == field_index(ModelId.THREAT, "distinct_anomaly_types")


def test_hash_fields_are_not_features():
    rec = _valid(ModelId.FAILURE, 16)
    other = rec.copy()
    other["component_hash"] = 12345
    assert np.array_equal(encode_batch(ModelId.FAILURE, rec)[0], encode_batch(ModelId.FAILURE, other)[0])


@pytest.mark.parametrize("mid", MIDS)
def test_postprocess_keeps_api_ranges_even_for_garbage(mid):
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 3, (500, N_RAW_OUTPUTS[mid])).astype(np.float32)
    raw[::7] = np.nan
    raw[1::11] = np.inf
    out = np.zeros((500, 4))
    postprocess(int(mid), raw, out)
    assert np.isfinite(out).all()
    names = ka.OUTPUT_NAMES[mid]
    for j, name in enumerate(names):
        col = out[:, j]
        if name in ("threatType", "failureType"):
            assert set(np.unique(col)) <= set(range(6))
        elif name == "recommendedAction":
            assert set(np.unique(col)) <= set(range(5))
        elif name == "accessType":
            assert set(np.unique(col)) <= set(range(3))
        elif name == "predictedMemory":
            assert (col >= 0).all()
        elif name == "predictedTime":
            assert ((col == -1) | (col >= 0)).all()
        else:
            assert ((col >= 0) & (col <= 1)).all(), name


def test_postprocess_gates_failure_time_and_type_on_probability():
    raw = np.zeros((2, N_RAW_OUTPUTS[ModelId.FAILURE]), np.float32)
    raw[:, 1] = math.log1p(600_000) / 20.0  # 10 minutes
    raw[:, 5] = 1.0  # type 3 (CRASH) most likely
    raw[0, 0], raw[1, 0] = 0.2, 0.9
    out = np.zeros((2, 4))
    postprocess(int(ModelId.FAILURE), raw, out)
    assert out[0, 1] == -1 and out[0, 3] == ka.FailureType.NONE
    assert out[1, 1] == pytest.approx(600_000, rel=1e-4) and out[1, 3] == ka.FailureType.CRASH


_FIELD8 = np.dtype([("v", np.float32, (8,))])


@njit
def _all_within(rec, lo, hi):
    return all_within(rec[0].v, lo, hi)


def test_array_checks_compare_exactly_whatever_the_bounds():
    """``all_within`` compares float32 fields in float32 where both bounds are exact float32 values
    and drops the finiteness test where both are finite; neither may change an answer: a bound
    that float32 cannot hold (0.1 rounds up to 0.100000001) and infinite bounds with inf and NaN."""
    rec = np.zeros(1, _FIELD8)

    def within(value, lo, hi):
        rec["v"][0] = 0.05
        rec["v"][0, 5] = value
        return _all_within(rec, lo, hi)

    f01 = float(np.float32(0.1))  # 0.10000000149...
    assert not within(np.float32(0.1), 0.0, 0.1) and within(np.float32(0.1), 0.0, f01)
    assert within(np.nextafter(np.float32(0.1), np.float32(0)), 0.0, 0.1)
    assert not within(np.float32(0.0), 0.0 + 2.0**-160, 1.0) and within(np.float32(0.0), -0.0, 1.0)
    assert within(-0.0, 0.0, 1.0) and not within(-1e-45, 0.0, 1.0)
    for lo, hi in ((0.0, math.inf), (-math.inf, math.inf), (0.0, 1.0), (0.0, 0.1)):
        assert not within(math.nan, lo, hi) and not within(math.inf, lo, hi) and not within(-math.inf, lo, hi)
    assert within(3e38, 0.0, math.inf) and within(-3e38, -math.inf, math.inf)


@pytest.mark.parametrize("mid", MIDS)
def test_every_scalar_float_field_rejects_nan_and_infinities(mid):
    """Scalar checks drop their finiteness test where both bounds are finite (the range test
    excludes NaN and inf then); fields with an infinite bound keep it: each must still name the
    field for NaN, +inf and -inf, in the per-record and the row encoders."""
    base = _valid(mid, 1, 4)
    names = [n for n in RANGES[mid] if base[n].ndim == 1 and base[n].dtype.kind == "f"]
    for name in names:
        for bad in (math.nan, math.inf, -math.inf):
            rec = base.copy()
            rec[name] = bad
            _, err = encode_batch(mid, rec)
            row_err = np.zeros(1, np.int32)
            ROW_ENCODERS[mid](rec, np.zeros(1, np.int64), 1, np.zeros((1, N_FEATURES[mid]), np.float32), row_err,
                              new_scratch(1))  # fmt: skip
            assert err[0] == row_err[0] == field_index(mid, name), (name, bad)
