"""The compiled backend: the .tflite graph as numba code, against LiteRT on the same artifact."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_abi import PAYLOADS, ModelId
from models import (
    BACKENDS,
    N_RAW_OUTPUTS,
    ArtifactError,
    default_models_dir,
    encode_batch,
    forward,
    load_runner,
    make_bank,
    postprocess,
    scratch_for,
)
from models import _ops as o
from models._artifacts import write_manifest
from models._data import GENERATORS, split
from models._program import program_from_tflite
from models._spec import N_MODEL_SLOTS, RANGES
from shmd import _config

MIDS = list(ModelId)
TOL = 1e-5
#: Post-processed columns that are decisions (enums), per model; the rest are values.
DECISIONS = {ModelId.WORKLOAD: (), ModelId.THREAT: (1, 3), ModelId.FAILURE: (3,), ModelId.MEMORY: (2,)}

_runners: dict[tuple[ModelId, str], object] = {}


def _runner(mid: ModelId, backend: str):
    if (mid, backend) not in _runners:
        _runners[mid, backend] = load_runner(mid, backend=backend)
    return _runners[mid, backend]


def _near_boundary(mid: ModelId, raw: np.ndarray, col: int) -> bool:
    """Whether a decision of row ``raw`` rests on a margin LiteRT's rounding could flip."""

    def close(a, b):
        return abs(float(a) - float(b)) <= 2 * TOL

    def tie(lo, hi):
        top = np.sort(raw[lo:hi])[-2:]
        return close(top[0], top[1])

    if mid == ModelId.THREAT:
        return close(raw[0], 0.5) or (tie(2, 7) if col == 1 else tie(7, 12))
    if mid == ModelId.FAILURE:
        return close(raw[0], 0.5) or tie(3, 8)
    return tie(2, 5)


def _assert_same_answers(mid: ModelId, x: np.ndarray) -> None:
    """Raw outputs within TOL; post-processed decisions equal, values within rounding."""
    lite = _runner(mid, "litert").predict(x)
    comp = _runner(mid, "compiled").predict(x)
    diff = np.abs(lite.astype(np.float64) - comp)
    assert diff.max() <= TOL, (mid.name, diff.max(0))
    post_l, post_c = np.zeros((len(x), 4)), np.zeros((len(x), 4))
    postprocess(int(mid), lite, post_l)
    postprocess(int(mid), comp, post_c)
    agree = np.ones(len(x), bool)
    for col in DECISIONS[mid]:
        for r in np.flatnonzero(post_l[:, col] != post_c[:, col]):
            assert _near_boundary(mid, lite[r], col), (mid.name, col, lite[r], comp[r])
            agree[r] = False
    for col in set(range(4)) - set(DECISIONS[mid]):  # values, where the decisions they hang on agree
        np.testing.assert_allclose(post_c[agree, col], post_l[agree, col], rtol=1e-4, atol=2 * TOL)


@pytest.mark.parametrize("mid", MIDS)
def test_compiled_matches_litert_on_the_heldout_set(mid):
    """5,000 held-out rows of each model: every raw output within 1e-5, same API answers."""
    seed = json.loads((default_models_dir() / _runner(mid, "litert").name / "1" / "manifest.json").read_text())
    x = split(mid, seed["training"]["seed"], "test", 5000)[1]
    _assert_same_answers(mid, x)


def _edges(lo: float, hi: float, dtype: np.dtype) -> st.SearchStrategy:
    if dtype.kind != "f":
        top = np.iinfo(dtype).max if hi == float("inf") else int(hi)
        return st.one_of(st.sampled_from([int(lo), top]), st.integers(int(lo), top))
    big = float(np.finfo(dtype).max)  # float64 fields (memory timestamps) reach 1.8e308, not 3.4e38
    top, bottom = min(hi, big), max(lo, -big)
    special = [v for v in (bottom, top, 0.0, 1.0, 1e-30, 1e-7, 0.5, 1e6, 1e30, 1e300) if bottom <= v <= top]
    return st.one_of(st.sampled_from(special), st.floats(bottom, top, allow_nan=False, width=dtype.itemsize * 8))


@st.composite
def _valid_records(draw, mid: ModelId, n: int = 8) -> np.ndarray:
    """Generated records with fields overwritten by range edges and random valid values."""
    rec = GENERATORS[mid](n, draw(st.integers(0, 2**16)))[0].copy()
    for i in range(n):
        for name in draw(st.sets(st.sampled_from(sorted(RANGES[mid])))):
            lo, hi = RANGES[mid][name]
            dtype = PAYLOADS[mid][name].base
            shape = PAYLOADS[mid][name].shape
            values = [draw(_edges(lo, hi, dtype)) for _ in range(int(np.prod(shape)))]
            rec[name][i] = np.array(values, dtype).reshape(shape)
        if mid == ModelId.THREAT:  # keep the cross-field rules: counts sum, distinct <= count
            rec["anomaly_count"][i] = min(int(rec["severity_counts"][i].astype(np.int64).sum()), 64)
            if rec["severity_counts"][i].astype(np.int64).sum() > 64:
                rec["severity_counts"][i] = [rec["anomaly_count"][i], 0, 0, 0]
            rec["distinct_anomaly_types"][i] = min(rec["distinct_anomaly_types"][i], rec["anomaly_count"][i])
    return rec


@pytest.mark.parametrize("mid", MIDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_matches_litert_on_edge_inputs(mid, data):
    rec = data.draw(_valid_records(mid))
    x, err = encode_batch(mid, rec)
    assert not err.any(), err  # the strategy only makes valid records
    assert np.isfinite(x).all(), np.argwhere(~np.isfinite(x))  # a valid record has finite features
    _assert_same_answers(mid, x)


#: Features no valid record encodes to. The compiled pass must answer them as LiteRT does
#: (IEEE inf/NaN), never raise: NaN made the memory model's candidate pick divide 0 by 0,
#: and numba's default error model raised ZeroDivisionError out of the daemon's pass.
_NONFINITE = (math.nan, math.inf, -math.inf, 3.4e38, -3.4e38)
_FINITE_ODD = (1e-45, -1e-45, 0.0, 1e6, -1e6)


@pytest.mark.parametrize("mid", MIDS)
def test_compiled_forward_answers_nonfinite_features_without_raising(mid):
    """Odd rows get inf, NaN or overflowing features, even rows odd finite ones. Where an
    overflow turns into inf or NaN depends on the order of the sums (LiteRT's and ours
    differ), so outputs are compared where both are finite; an all-NaN row is NaN in
    both, and post-processing keeps every answer in its API range."""
    rng = np.random.default_rng(int(mid))
    x = split(mid, 4, "test", 64)[1].copy()
    for r in range(len(x)):
        cols = rng.choice(x.shape[1], size=1 + r % 4, replace=False)
        x[r, cols] = rng.choice(_NONFINITE if r % 2 else _FINITE_ODD, size=len(cols))
    x[0, :] = math.nan
    lite = _runner(mid, "litert").predict(x)
    comp = _runner(mid, "compiled").predict(x)  # raised ZeroDivisionError (memory) before
    assert np.isnan(lite[0]).all() and np.isnan(comp[0]).all()
    assert np.isfinite(lite[2::2]).all() and np.isfinite(comp[2::2]).all()
    both = np.isfinite(lite) & np.isfinite(comp)
    np.testing.assert_allclose(comp[both], lite[both], rtol=1e-4, atol=TOL)
    post = np.zeros((len(x), 4))
    postprocess(int(mid), comp, post)
    assert np.isfinite(post).all()


@pytest.mark.parametrize("mid", MIDS)
def test_every_batch_size_gives_the_rows_of_one_big_batch(mid):
    """Tile and kernel boundaries (1, 4, 31, 32, 33 rows...) do not change any row's answer."""
    x = split(mid, 3, "test", 300)[1]
    runner = _runner(mid, "compiled")
    whole = runner.predict(x)
    at = 0
    for size in (1, 3, 4, 5, 31, 32, 33, 64, 127):
        part = runner.predict(x[at : at + size])
        np.testing.assert_array_equal(part, whole[at : at + size])
        at += size
    assert runner.predict(x[:0]).shape == (0, N_RAW_OUTPUTS[mid])


def test_one_bank_serves_every_model_as_its_own_runner_does():
    """The daemon's shape: one bank of four programs, one scratch, forward by model id."""
    programs = {int(m): (_runner(m, "compiled").program, 1) for m in MIDS}
    bank = make_bank(programs, N_MODEL_SLOTS)
    scratch = scratch_for(bank)
    for mid in MIDS:
        x = split(mid, 5, "test", 40)[1]
        out = np.zeros((40, N_RAW_OUTPUTS[mid]), np.float32)
        forward(bank, int(mid), x, 40, out, scratch)
        np.testing.assert_array_equal(out, _runner(mid, "compiled").predict(x))
    with pytest.raises(ValueError, match="too small"):
        forward(bank, int(ModelId.MEMORY), x[:, :20], 40, out, scratch)  # 20 of memory's 70 features


def test_backend_names_agree_and_unknown_backend_is_named():
    assert _config.BACKENDS == BACKENDS
    with pytest.raises(ValueError, match=r"unknown backend: backend='onnx' \(use one of litert, compiled, tf\)"):
        load_runner(ModelId.THREAT, backend="onnx")


def test_compiled_backend_checks_the_manifest_and_refuses_unknown_ops(tmp_path):
    """A corrupt file is refused by sha256; a graph with an op it lacks, by the op's name."""
    shutil.copytree(default_models_dir() / "threat", tmp_path / "threat")
    tfl = tmp_path / "threat" / "1" / "model.tflite"
    good = tfl.read_bytes()
    tfl.write_bytes(good[:-1] + b"\0")
    with pytest.raises(ArtifactError, match=r"^model file is corrupt: .*model\.tflite: sha256"):
        load_runner(ModelId.THREAT, backend="compiled", models_dir=tmp_path)
    # Rename the graph's SOFTMAX operator code to TANH: a valid file the backend cannot run.
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(good, 0)
    for code in model.operatorCodes:
        if code.builtinCode == schema.BuiltinOperator.SOFTMAX:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.TANH
    import flatbuffers

    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    tfl.write_bytes(bytes(b.Output()))
    manifest = json.loads((tmp_path / "threat" / "1" / "manifest.json").read_text())
    write_manifest(tmp_path / "threat" / "1", manifest)
    refused = r"cannot run this TFLite model: .*op=TANH \(serve it with --backend litert\)"
    with pytest.raises(ArtifactError, match=refused):
        load_runner(ModelId.THREAT, backend="compiled", models_dir=tmp_path)
    assert program_from_tflite(default_models_dir() / "threat" / "1" / "model.tflite").ops[:, o.OP_KIND].min() > 0


@pytest.mark.parametrize("mid", MIDS)
def test_every_op_writes_only_its_tensor_and_gathers_only_its_indices(mid):
    """An op's width is its output tensor's: a GATHER took its input's width (38 columns for
    workload's 3 indices), reading 35 other constants as column indices."""
    prog = _runner(mid, "compiled").program
    for row in prog.ops:
        readers = prog.ops[(prog.ops[:, o.OP_A] == row[o.OP_OUT]) & (prog.ops[:, o.OP_KIND] != o.K_COPY)]
        for reader in readers:  # what reads this op's result reads exactly its width (or one broadcast column)
            assert reader[o.OP_A_WIDTH] in (row[o.OP_WIDTH], 1), (row.tolist(), reader.tolist())
        assert row[o.OP_OUT] + row[o.OP_WIDTH] <= prog.stride
