"""/openapi.json tells the truth: schemathesis, as a new user would run it, against a real ``shmd serve``.

``st run URL --checks all`` with bounded examples: every operation, positive and negative
data, undeclared methods (405 with the right Allow header), response schemas in JSON and in
msgpack (tests/_schemathesis_hooks.py), 0 failures and 0 errors expected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._http_daemon import ROOT, Daemon, free_port, unique_prefix

pytestmark = pytest.mark.timeout(240)

MAX_EXAMPLES = 5  # per operation and phase: bounds the run (~1,500 cases, mostly the coverage phase's)
SEED = 12  # reproducible; schemathesis prints it with every failure either way


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(unique_prefix("st"), port=free_port(), channels="scheduler")
    yield d
    assert not d.stop(), "daemon left shared memory behind"


def test_schemathesis_finds_no_failure(daemon: Daemon, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (it is in the test extra: pip install -e '.[test]')")
    cmd = [st, "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run",
           f"http://127.0.0.1:{daemon.port}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
           "--seed", str(SEED), "--no-color", "--generation-database", "none"]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests._schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    # cwd: schemathesis keeps a working directory (.schemathesis/) there, not in the repository
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=200)
    summary = proc.stdout[proc.stdout.rfind("SUMMARY") :] if "SUMMARY" in proc.stdout else proc.stdout[-4000:]
    assert proc.returncode == 0, f"schemathesis failed ({' '.join(cmd)}):\n{proc.stdout[-20000:]}\n{proc.stderr}"
    assert "generated" in summary and "passed" in summary, summary  # it did run cases
    assert daemon.alive(), daemon.log()
