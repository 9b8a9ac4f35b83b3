"""Artifact directories: ``<models_dir>/<name>/<version>/{model.keras, model.tflite, manifest.json}``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kernel_abi import ModelId

from ._repository import MANIFEST, latest_version, model_dir, version_dir
from ._spec import ENCODER_VERSION, MODEL_NAMES, N_FEATURES, N_RAW_OUTPUTS

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"


class ArtifactError(Exception):
    """A model artifact is missing, corrupt or was built for other code.

    Raised by ``load_runner``; the message names the file and what is wrong. Reinstall
    the package or rebuild the artifacts with ``shmd train --model <name> --out DIR``.
    """


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_manifest(mid: ModelId, models_dir: Path | None, need: str, version: int | None = None) -> tuple[dict, Path]:
    """The checked manifest of ``version`` (default: the latest) of model ``mid`` and the path of its file ``need``.

    Every file listed in the manifest must exist and match its sha256, and the manifest's
    version must be its directory's.
    """
    if version is None:
        version = latest_version(models_dir, mid)
        if version is None:
            raise ArtifactError(
                f"model has no version: {model_dir(models_dir, mid)} holds no <version>/{MANIFEST} (layout "
                f"<models-dir>/<model>/<version>/; train with `shmd train --model {MODEL_NAMES[mid]} --out DIR`)"
            )
    directory = version_dir(models_dir, mid, version)
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"model manifest is missing: {path} (train with `shmd train --model {MODEL_NAMES[mid]} --out DIR`)"
        )
    try:
        manifest = json.loads(path.read_text())
        files: dict[str, str] = manifest["files"]
        checks = {
            "name": (manifest["name"], MODEL_NAMES[mid]),
            "encoder_version": (manifest["encoder_version"], ENCODER_VERSION[mid]),
            "n_features": (manifest["input"]["shape"][1], N_FEATURES[mid]),
            "n_outputs": (manifest["output"]["shape"][1], N_RAW_OUTPUTS[mid]),
            "version": (int(manifest["version"]), int(version)),
        }
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ArtifactError(f"model manifest is corrupt: {path}: {exc!r}") from exc
    for key, (found, expected) in checks.items():
        if found != expected:
            raise ArtifactError(
                f"manifest does not match this code: {path}: {key}={found!r}, expected {expected!r}"
            )
    if need not in files:
        raise ArtifactError(f"manifest lists no {need}: {path}")
    for name, expected in files.items():
        f = directory / name
        if not f.is_file():
            raise ArtifactError(f"model file is missing: {f}")
        found = sha256_file(f)
        if found != expected:
            raise ArtifactError(f"model file is corrupt: {f}: sha256 expected {expected}, found {found}")
    return manifest, directory / need


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Write ``manifest`` with the sha256 of every model file in ``directory`` added."""
    manifest = dict(manifest)
    manifest["files"] = {n: sha256_file(directory / n) for n in (KERAS_FILE, TFLITE_FILE)}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
