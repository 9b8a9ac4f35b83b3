"""A tiny smoke run of ``shmd train``: it writes loadable, checksummed artifacts and a report."""

from __future__ import annotations

import json

import numpy as np

from kernel_abi import ModelId
from models import N_FEATURES, canary, load_runner
from models.train import main


def test_train_smoke_writes_loadable_artifacts(tmp_path, capsys):
    (tmp_path / "failure" / "1").mkdir(parents=True)  # taken (no manifest yet): training writes version 2
    assert main(["--model", "failure", "--rows", "600", "--seed", "3", "--out", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "held-out evaluation" in report and "brier" in report
    metrics = json.loads((tmp_path / "heldout_metrics.json").read_text())
    assert set(metrics) == {"failure"} and "base_rate" in metrics["failure"]["brier"]
    runner = load_runner(ModelId.FAILURE, models_dir=tmp_path)
    assert runner.manifest["training"]["seed"] == 3
    assert runner.version == 2 and (tmp_path / "failure" / "2" / "manifest.json").is_file()
    canary.check(runner)  # the canaries it recorded reproduce
    assert len(runner.manifest["canaries"]["inputs"]) == canary.N_CANARIES
    assert set(runner.manifest["files"]) == {"model.keras", "model.tflite"}
    assert runner.manifest["tflite_vs_keras_max_abs_diff"] <= 1e-5
    out = runner.predict(np.zeros((2, N_FEATURES[ModelId.FAILURE]), np.float32))
    assert np.isfinite(out).all()
