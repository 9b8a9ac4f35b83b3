"""The shipped artifacts: checksums, errors, LiteRT runner behaviour, parity with tf, held-out quality."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from kernel_abi import ModelId
from models import N_FEATURES, N_RAW_OUTPUTS, ArtifactError, default_models_dir, load_runner, postprocess
from models._data import split
from models._evaluate import evaluate

MIDS = list(ModelId)


def _features(mid: ModelId, n: int) -> tuple:
    manifest = json.loads((default_models_dir() / load_runner(mid).name / "1" / "manifest.json").read_text())
    rec, x, lab = split(mid, manifest["training"]["seed"], "test", n)
    _, _, train_lab = split(mid, manifest["training"]["seed"], "train", 2000)
    return manifest, rec, x, lab, train_lab


@pytest.mark.parametrize("mid", MIDS)
def test_shipped_artifact_loads_and_is_small(mid):
    runner = load_runner(mid)
    assert runner.version >= 1 and runner.name == runner.manifest["name"]
    directory = default_models_dir() / runner.name / str(runner.version)
    assert sum(p.stat().st_size for p in directory.iterdir()) < 400_000
    out = runner.predict(np.zeros((3, N_FEATURES[mid]), np.float32))
    assert out.shape == (3, N_RAW_OUTPUTS[mid]) and out.dtype == np.float32


def test_corrupt_and_missing_artifacts_are_named(tmp_path):
    shutil.copytree(default_models_dir() / "threat", tmp_path / "threat")
    tfl = tmp_path / "threat" / "1" / "model.tflite"
    tfl.write_bytes(tfl.read_bytes()[:-1] + b"\0")
    with pytest.raises(
        ArtifactError, match=r"^model file is corrupt: .*model\.tflite: sha256 expected [0-9a-f]{64}, found"
    ):
        load_runner(ModelId.THREAT, models_dir=tmp_path)
    with pytest.raises(ArtifactError, match=r"^model has no version: .*workload holds no <version>/manifest\.json"):
        load_runner(ModelId.WORKLOAD, models_dir=tmp_path)
    with pytest.raises(ArtifactError, match=r"^model manifest is missing: .*threat/2/manifest\.json"):
        load_runner(ModelId.THREAT, models_dir=tmp_path, version=2)
    (tmp_path / "threat" / "1" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"^model manifest is corrupt: "):
        load_runner(ModelId.THREAT, models_dir=tmp_path)


@pytest.mark.parametrize("mid", MIDS)
def test_litert_matches_tf_backend(mid):
    """Parity on 1,000 held-out rows: max abs difference <= 1e-5."""
    x = _features(mid, 1000)[2]
    lite = load_runner(mid).predict(x)
    tf_out = load_runner(mid, backend="tf").predict(x)
    assert np.abs(lite - tf_out).max() <= 1e-5


@pytest.mark.parametrize("mid", MIDS)
def test_heldout_quality_matches_manifest(mid):
    """A fresh 3,000-row sample of the held-out generator: the model beats its baselines as recorded."""
    manifest, rec, x, lab, train_lab = _features(mid, 3000)
    raw = load_runner(mid).predict(x)
    out = np.zeros((len(x), 4))
    postprocess(int(mid), raw, out)
    got = evaluate(mid, rec, x, raw, out, lab, train_lab)
    shipped = manifest["heldout_metrics"]
    lower_is_better = ("mae", "brier")
    for metric, vals in got.items():
        if metric == "confidence":
            assert vals["ece"] <= 0.06, vals
            continue
        ref = shipped[metric]["model"]
        for base, v in vals.items():
            if base == "model":
                continue
            if any(k in metric for k in lower_is_better):
                assert vals["model"] < v, (metric, vals)
            else:
                assert vals["model"] > v, (metric, vals)
        # The sample is fixed (seeded split), so this is deterministic for the shipped model:
        # measured within 5.5% of the manifest's (larger) held-out figures; 8% allows a retrain.
        assert vals["model"] == pytest.approx(ref, rel=0.08), (metric, vals["model"], ref)


def test_litert_buckets_pad_and_cache_interpreters():
    runner = load_runner(ModelId.MEMORY)
    x = _features(ModelId.MEMORY, 300)[2]
    full = runner.predict(x)
    ones = np.concatenate([runner.predict(x[i : i + 1]) for i in range(5)])
    assert np.array_equal(full[:5], ones)
    three_a = runner.predict(x[:3])
    slots = dict(runner._slots)
    me = threading.get_ident()
    three_b = runner.predict(x[3:6])
    assert runner._slots[(me, 4)] is slots[(me, 4)]  # batch of 3 reuses the allocated bucket-4 interpreter
    assert np.array_equal(np.concatenate([three_a, three_b]), full[:6])
    big = np.concatenate([x] * 4)  # 1,200 rows: more than the largest bucket
    assert np.array_equal(runner.predict(big), np.concatenate([full] * 4))


def test_litert_runner_gives_each_thread_its_own_interpreters():
    runner = load_runner(ModelId.FAILURE)
    x = _features(ModelId.FAILURE, 64)[2]
    expected = runner.predict(x)
    results, interps = [], []
    # Both threads are alive together: a thread's ident is reused once it has ended, so two
    # threads run one after the other (a loaded machine) could share a key without a bug.
    together = threading.Barrier(2, timeout=60)

    def work():
        together.wait()
        for _ in range(20):
            results.append(np.array_equal(runner.predict(x), expected))
        interps.append(runner._slots[(threading.get_ident(), 64)][0])
        together.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results) and len(results) == 40
    assert interps[0] is not interps[1]


def test_serving_with_litert_does_not_import_tensorflow():
    code = (
        "import sys, numpy as np, models\n"
        "r = models.load_runner(2)\n"
        "r.predict(np.zeros((4, models.N_FEATURES[2]), np.float32))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
