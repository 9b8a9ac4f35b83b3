"""Canaries: a few held-out feature rows and their raw outputs, recorded in a version's manifest.

Before a version is served (at start-up or on a hot load) the daemon runs the canary
inputs through the freshly loaded runner, on the backend it will serve with, and
refuses the version unless every raw output is within ``TOLERANCE`` of the recorded one:
a file that passes its sha256 but computes something else (another model's weights, a
broken conversion, a backend that lowers an operator wrongly) never reaches a caller.

``shmd train`` records them; ``python -m models.canary [--models-dir DIR]`` records them
into manifests that were written without (the shipped version 1 was), from LiteRT, the
reference backend, with no retraining.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kernel_abi import ModelId

from ._artifacts import TFLITE_FILE, ArtifactError
from ._repository import MANIFEST, version_dir, versions_on_disk
from ._spec import MODEL_NAMES

N_CANARIES = 8  # held-out rows per model
TOLERANCE = 1e-5  # largest |difference| of a raw output; the backends agree within it (docs/MODELS.md)
REFERENCE = "litert"


def canary_inputs(mid: ModelId, seed: int) -> np.ndarray:
    """``float32[N_CANARIES, f]``: the first rows of a small test split of model ``mid`` for ``seed``."""
    from ._data import split  # numba encoders: only training and this tool need them

    return split(mid, seed, "test", N_CANARIES)[1]


def reference_outputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """Raw outputs of the ``.tflite`` model for ``x``, by LiteRT (what serves by default)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite, num_threads=1)
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(inp, list(x.shape), strict=True)
    it.allocate_tensors()
    it.set_tensor(inp, np.ascontiguousarray(x, np.float32))
    it.invoke()
    return np.array(it.get_tensor(out), np.float32)


def record(tflite: bytes, x: np.ndarray) -> dict:
    """The manifest's ``canaries`` entry for inputs ``x``."""
    y = reference_outputs(tflite, x)
    return {
        "inputs": [[float(v) for v in row] for row in x],
        "outputs": [[float(v) for v in row] for row in y],
        "backend": REFERENCE,
        "tolerance": TOLERANCE,
    }


def check(runner) -> None:
    """Run ``runner``'s manifest canaries through it; ArtifactError naming the first mismatch."""
    where = f"model={runner.name} version={runner.version} backend={runner.backend}"
    canaries = runner.manifest.get("canaries")
    if not canaries:
        raise ArtifactError(
            f"manifest has no canaries: {where} (record them: python -m models.canary --models-dir DIR)"
        )
    try:
        x = np.array(canaries["inputs"], np.float32)
        expected = np.array(canaries["outputs"], np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest canaries are corrupt: {where}: {exc!r}") from exc
    if x.ndim != 2 or x.shape[1] != runner.n_features or expected.shape != (x.shape[0], runner.n_outputs):
        raise ArtifactError(
            f"manifest canaries have the wrong shape: {where}: inputs {list(x.shape)} outputs {list(expected.shape)}, "
            f"expected [n, {runner.n_features}] and [n, {runner.n_outputs}]"
        )
    got = np.asarray(runner.predict(x), np.float32)
    diff = np.abs(got.astype(np.float64) - expected)
    diff[~np.isfinite(diff)] = np.inf
    if diff.max(initial=0.0) > TOLERANCE:
        row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise ArtifactError(
            f"canary mismatch: {where} row={row} column={col}: expected {expected[row, col]:.7g}, "
            f"got {got[row, col]:.7g} (|diff| {diff[row, col]:.2g} > {TOLERANCE:g})"
        )


def record_into(directory: Path, mid: ModelId, seed: int) -> Path:
    """Add canaries to the manifest in ``directory`` (the files' sha256 are untouched: the manifest lists them)."""
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["canaries"] = record((directory / TFLITE_FILE).read_bytes(), canary_inputs(mid, seed))
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.canary", description="Record canaries into manifests.")
    ap.add_argument("--models-dir", type=Path, default=None, help="repository (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=7, help="data seed of the canary rows (default 7)")
    ap.add_argument("--force", action="store_true", help="re-record manifests that already have canaries")
    args = ap.parse_args(argv)
    for mid in ModelId:
        for version in versions_on_disk(args.models_dir, mid):
            directory = version_dir(args.models_dir, mid, version)
            if "canaries" in json.loads((directory / MANIFEST).read_text()) and not args.force:
                continue
            print(f"{MODEL_NAMES[mid]} v{version}: {record_into(directory, mid, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
