"""Start-up faults: a full /dev/shm, a corrupt model artifact, a bad capacity.

Each is one line on stderr naming the cause and the fix, exit code 2, and
nothing left in /dev/shm.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringbuf import leftovers, remove_leftovers

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "shmd.cli", "serve", "--no-http"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _serve(prefix: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SERVE, "--prefix", prefix, *args], capture_output=True, text=True, timeout=90,
                          cwd=ROOT, env={**ENV, **(env or {})})  # fmt: skip


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_dev_shm_too_small_is_one_line_and_leaves_nothing(prefix: str) -> None:
    """A private 1 MiB /dev/shm (mount namespace): the stats segment fits, the second channel does not."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"needs root for a private tmpfs on /dev/shm (unshare -m; mount): {probe.stderr.strip()}")
    script = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && { "$@"; rc=$?; echo "left: $(ls -A /dev/shm)"; exit $rc; }'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *SERVE, "--prefix", prefix, "--channels", "a,b,c"],
        capture_output=True, text=True, timeout=90, cwd=ROOT, env=ENV,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _last_line(proc.stderr)
    assert line.startswith(f"shmd serve: cannot create the shared memory of prefix '{prefix}': cannot allocate "
                           f"segment /{prefix}."), line  # fmt: skip
    assert "No space left on device" in line and "enlarge it (mount -o remount,size=...)" in line, line
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "left:", proc.stdout  # nothing in the small /dev/shm either


def _artifacts_copy(tmp_path: Path) -> Path:
    from models import default_models_dir

    out = tmp_path / "artifacts"
    shutil.copytree(default_models_dir(), out)
    return out


def test_corrupt_artifact_is_one_line_naming_the_file_and_the_fix(tmp_path: Path, prefix: str) -> None:
    models_dir = _artifacts_copy(tmp_path)
    tflite = models_dir / "threat" / "1" / "model.tflite"
    data = bytearray(tflite.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    tflite.write_bytes(bytes(data))
    proc = _serve(prefix, "--models-dir", str(models_dir))
    assert proc.returncode == 2, proc.stderr
    line = _last_line(proc.stderr)
    assert line.startswith(f"shmd serve: model file is corrupt: {tflite}: sha256 expected"), line
    assert line.endswith("pass --models-dir DIR, or reinstall shmd"), line
    assert not leftovers(prefix)


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("compiled", "cannot parse TFLite model: {tflite}: "),
        ("litert", "model memory does not load or run on backend litert: "),
    ],
)
def test_artifact_that_passes_its_checksum_but_does_not_load(
    tmp_path: Path, prefix: str, backend: str, message: str
) -> None:
    """Garbage with a matching manifest: the runtime's own error, still one line and exit 2."""
    models_dir = _artifacts_copy(tmp_path)
    tflite = models_dir / "memory" / "1" / "model.tflite"
    tflite.write_bytes(b"not a flatbuffer" * 64)
    manifest_path = models_dir / "memory" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["model.tflite"] = hashlib.sha256(tflite.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    proc = _serve(prefix, "--models-dir", str(models_dir), "--backend", backend)
    assert proc.returncode == 2, proc.stderr
    line = _last_line(proc.stderr)
    assert line.startswith("shmd serve: " + message.format(tflite=tflite)), line
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not leftovers(prefix)


@pytest.mark.parametrize(
    ("env", "message"),
    [({"SHMD_SQ_CAPACITY": "1000"}, "sq_capacity must be a power of two in [2, 16777216]: sq_capacity=1000")],
)  # the other rules: tests/test_config.py, in-process
def test_bad_settings_are_one_line_before_anything_is_created(prefix: str, env: dict, message: str) -> None:
    proc = _serve(prefix, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"shmd serve: {message}"
    assert not leftovers(prefix)
    remove_leftovers(prefix)
