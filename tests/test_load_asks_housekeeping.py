"""A load request and a prepared version make housekeeping due at once, not a period later.

Housekeeping (which sees load requests and swaps prepared versions in) runs every 50 ms at
a quiet moment; load request -> answer took ~2 periods. A request (``request_load``) and the
loader finishing a version (``Loader.on_done``) set ``LOOP_HOUSEKEEPING_ASKED``: the compiled
``step`` returns for housekeeping at its next quiet moment instead of sleeping on, and
housekeeping runs although its period is not over. Driven in-process, step by step.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from kernel_abi import ModelId
from models import default_models_dir
from shmd import _config
from shmd import _model_states as ms
from shmd._pass_layout import LOOP_HOUSEKEEPING_ASKED
from shmd.daemon import Daemon

from .test_model_lifecycle import add_version

pytestmark = pytest.mark.timeout(180)

LONG_SLEEP_NS = 30_000_000_000  # the sleep the idle loop would take if nothing made housekeeping due
BOUND_S = 10.0  # a stall catcher, far below LONG_SLEEP_NS and far above a quiet moment (50 µs)
WAIT_S = 60.0  # bound on the loader process (spawned at the first load) preparing the version


def test_a_load_request_and_a_prepared_version_make_housekeeping_due_at_once(prefix: str, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(default_models_dir(), repo)
    add_version(repo, "workload", 2)
    config = tmp_path / "shmd.toml"
    config.write_text("[model_versions]\nworkload = 1\n")
    argv = ["--prefix", prefix, "--no-http", "--channels", "a", "--models-dir", str(repo), "--config", str(config)]
    daemon = Daemon(_config.load(argv, {}))
    try:
        a, wl = daemon.stats.arrays, int(ModelId.WORKLOAD)
        daemon.housekeeping()  # the period starts now: nothing below is due by time
        seq = ms.request_load(a, wl, 2)
        assert a["loop"][LOOP_HOUSEKEEPING_ASKED]
        t0 = time.monotonic()
        assert daemon.step(0, 0, LONG_SLEEP_NS) == 0  # idle: back for housekeeping, not after the long sleep
        assert time.monotonic() - t0 < BOUND_S, "step slept on although a load request asked for housekeeping"
        daemon.housekeeping()  # within its period: runs only because it was asked
        assert not a["loop"][LOOP_HOUSEKEEPING_ASKED]
        assert daemon.loader.pending == {wl: 2}, "housekeeping did not pick the load request up"
        deadline = time.monotonic() + WAIT_S
        while not a["loop"][LOOP_HOUSEKEEPING_ASKED]:  # set by the loader once version 2 is prepared
            assert time.monotonic() < deadline, f"the loader did not ask for housekeeping within {WAIT_S} s"
            time.sleep(0.01)
        daemon.housekeeping()
        assert [(c.mid, c.version, c.seq, c.error) for c in daemon.swaps] == [(wl, 2, seq, "")]
    finally:
        daemon.close()
