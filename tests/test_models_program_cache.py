"""A built forward-pass program is cached by file content and code: a hit is the built program, not a parse.

A damaged or foreign entry is only a miss (built again and replaced); nothing is ever
served from an entry this code did not write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import _program, _program_cache, default_models_dir
from models._program import Program, program_from_tflite

ARTIFACT = default_models_dir() / "workload" / "1" / "model.tflite"


def _same(a: Program, b: Program) -> None:
    assert np.array_equal(a.ops, b.ops) and np.array_equal(a.consts, b.consts)
    assert (a.n_in, a.n_out, a.in_col, a.out_col, a.stride) == (b.n_in, b.n_out, b.in_col, b.out_col, b.stride)


def _no_parsing(*_args: object) -> None:
    raise AssertionError("the graph was parsed again although its program is cached")


def test_a_program_is_built_once_then_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    built = program_from_tflite(ARTIFACT)
    entries = list(_program_cache.directory().glob("*.npz"))
    assert [e.name for e in entries] == [f"{_program_cache.key(ARTIFACT.read_bytes())}.npz"]
    with monkeypatch.context() as m:
        m.setattr(_program, "_Builder", _no_parsing)
        _same(program_from_tflite(ARTIFACT), built)
    assert not list(_program_cache.directory().glob("*.tmp"))


@pytest.mark.parametrize("damage", [b"", b"not an npz", "wrong dtype"])
def test_a_damaged_entry_is_a_miss_and_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  damage: bytes | str) -> None:  # fmt: skip
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    built = program_from_tflite(ARTIFACT)
    entry = _program_cache.key(ARTIFACT.read_bytes())
    if isinstance(damage, bytes):
        (_program_cache.directory() / f"{entry}.npz").write_bytes(damage)
    else:  # a readable entry of the wrong shape: ops as float
        _program_cache.store(entry, {"ops": built.ops.astype(np.float64), "consts": built.consts,
                                     "layout": np.zeros(5, np.int64)})  # fmt: skip
    _same(program_from_tflite(ARTIFACT), built)
    with monkeypatch.context() as m:  # rebuilt and stored again: the next load is a hit
        m.setattr(_program, "_Builder", _no_parsing)
        _same(program_from_tflite(ARTIFACT), built)


def test_an_unwritable_cache_directory_is_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker))  # shmd-programs cannot be made under a file
    _same(program_from_tflite(ARTIFACT), program_from_tflite(ARTIFACT))
