"""The model repository: ``<models_dir>/<model>/<version>/`` holding the artifact files and ``manifest.json``.

Versions are positive integers (the directory names); anything else in a model's
directory is ignored. ``shmd train --out DIR`` writes the next free version, and the
daemon serves, per model, the latest version or a pinned one (``_config``'s
``model_versions``).
"""

from __future__ import annotations

from pathlib import Path

from kernel_abi import ModelId

from ._spec import MODEL_NAMES

MANIFEST = "manifest.json"
#: Versions travel in the response slot's u16 ``model_version`` (0 = no model).
MAX_VERSION = 0xFFFF


def default_models_dir() -> Path:
    """The repository shipped inside the package (version 1 of every model)."""
    return Path(__file__).resolve().parent / "artifacts"


def model_dir(models_dir: Path | str | None, mid: ModelId | int) -> Path:
    """``<models_dir>/<model name>`` (the shipped repository when ``models_dir`` is None)."""
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    return root / MODEL_NAMES[ModelId(mid)]


def version_dir(models_dir: Path | str | None, mid: ModelId | int, version: int) -> Path:
    return model_dir(models_dir, mid) / str(int(version))


def versions_on_disk(models_dir: Path | str | None, mid: ModelId | int) -> list[int]:
    """The versions of model ``mid`` that have a manifest, ascending."""
    directory = model_dir(models_dir, mid)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        name = entry.name
        if name.isdigit() and name == str(int(name)) and 0 < int(name) <= MAX_VERSION and (entry / MANIFEST).is_file():
            found.append(int(name))
    return sorted(found)


def latest_version(models_dir: Path | str | None, mid: ModelId | int) -> int | None:
    versions = versions_on_disk(models_dir, mid)
    return versions[-1] if versions else None


def next_version(models_dir: Path | str | None, mid: ModelId | int) -> int:
    """One past the highest version directory of the model (1 for a new model)."""
    directory = model_dir(models_dir, mid)
    taken = [int(e.name) for e in directory.iterdir() if e.name.isdigit()] if directory.is_dir() else []
    return max(taken, default=0) + 1


__all__ = ["MANIFEST", "MAX_VERSION", "default_models_dir", "latest_version", "model_dir", "next_version",
           "version_dir", "versions_on_disk"]  # fmt: skip
