"""One C process may hold any number of channels (it kept them in a fixed table of 32)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import ringbuf

from .test_native import BUILDS, C_DIR, SAN_ENV

pytestmark = pytest.mark.timeout(120)

N = 40  # more than the old table held


def test_c_process_holds_forty_channels(prefix: str) -> None:
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR), "asan"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    names = [f"ch{i}" for i in range(N)]
    channels = [ringbuf.Channel.create(prefix, name, sq_capacity=2) for name in names]
    try:
        tool: Path = BUILDS["asan"] / "shmd_roundtrip"
        run = subprocess.run([str(tool), "hold", prefix, *names], capture_output=True, text=True, timeout=60,
                             env=SAN_ENV)  # fmt: skip
        assert run.returncode == 0 and run.stdout.strip() == f"held {N}", run.stderr
        assert not run.stderr, run.stderr  # sanitizers report there
    finally:
        for ch in channels:
            ch.unlink()
            ch.close()
