"""A hot load's path through the daemon, driven in-process step by step.

- Due at once: housekeeping (which sees load requests and swaps prepared versions in) runs
  every 50 ms at a quiet moment, and load request -> answer took ~2 periods. A request
  (``request_load``) and the loader finishing a version (``Loader.on_done``) set
  ``LOOP_HOUSEKEEPING_ASKED``: the compiled ``step`` returns for housekeeping at its next quiet
  moment instead of sleeping on, and housekeeping runs although its period is not over; while
  a version is prepared the idle loop sleeps at most ``LOADING_SLEEP_NS``.
- Installed by assignment: the loader's thread builds the pass's ``Models`` for the new version
  (``Candidate.install``); the swap assigns it, and the loop's compiled entry point is kept (the
  descriptors' types are unchanged: re-typing them took 1-9 ms on the loop's thread per swap).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ringbuf
from kernel_abi import ABI_VERSION, PAYLOADS, REQUEST, REQUESTS, ModelId
from models import default_models_dir
from shmd import _config, _loop
from shmd import _model_states as ms
from shmd._codec import encode_payload
from shmd._pass_layout import LOOP_HOUSEKEEPING_ASKED
from shmd.daemon import LOADING_SLEEP_NS, Daemon
from shmd.samples import WORKLOAD

from .test_model_lifecycle import add_version

pytestmark = pytest.mark.timeout(180)

LONG_SLEEP_NS = 30_000_000_000  # the sleep the idle loop would take if nothing made housekeeping due
BOUND_S = 10.0  # a stall catcher, far below LONG_SLEEP_NS and far above a quiet moment (50 µs)
WAIT_S = 60.0  # bound on the loader process (spawned at the first load) preparing the version


def _workload_request(request_id: int) -> np.ndarray:
    rec = np.zeros(1, REQUESTS[ModelId.WORKLOAD])
    rec["payload"] = encode_payload(ModelId.WORKLOAD, WORKLOAD)
    rec["request_id"], rec["model_id"], rec["abi_version"] = request_id, ModelId.WORKLOAD, ABI_VERSION
    rec["payload_len"] = PAYLOADS[ModelId.WORKLOAD].itemsize
    return rec.view(REQUEST)


def test_a_load_is_due_at_once_and_installed_by_assignment(
    prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
        # Its ask for housekeeping is a word the sleeping loop does not watch: short sleeps meanwhile.
        assert daemon.loop_sleep_ns() <= LOADING_SLEEP_NS, "the idle loop would sleep its full timeout on a load"
        deadline = time.monotonic() + WAIT_S
        while not a["loop"][LOOP_HOUSEKEEPING_ASKED]:  # set by the loader once version 2 is prepared
            assert time.monotonic() < deadline, f"the loader did not ask for housekeeping within {WAIT_S} s"
            time.sleep(0.01)
        daemon.housekeeping()
        assert [(c.mid, c.version, c.seq, c.error) for c in daemon.swaps] == [(wl, 2, seq, "")]
        assert daemon.loop_sleep_ns() == daemon.sleep_ns  # nothing loading: the configured sleep again
        cand = daemon.swaps[0]
        retyped, resolve = [], _loop.step_entry
        monkeypatch.setattr(_loop, "step_entry", lambda *descriptors: retyped.append(1) or resolve(*descriptors))
        daemon._swap(cand)  # as serve_forever does, with no pass in flight
        prepared = daemon.models is cand.install[1]
        assert prepared, "the swap rebuilt the Models that the loader's thread had prepared"
        sq, cq = ringbuf.Producer(daemon.channels[0].sq), ringbuf.Consumer(daemon.channels[0].cq)
        sq.produce(_workload_request(7))
        assert daemon.step(0, 0) == 0  # compiled backend: drained, run and published in one call
        answer = cq.consume(8)
        assert [(int(r["request_id"]), int(r["model_version"])) for r in answer] == [(7, 2)]
        assert not retyped, "the loop's entry point was resolved again for descriptors of the same types"
    finally:
        daemon.close()


def test_the_shim_imports_the_model_repository_at_start_not_in_its_first_listing() -> None:
    # Imported by the first GET /api/ml/models, models (~20 ms) held the shim's event loop and the
    # predictions behind it (bench lifecycle: a 20 ms HTTP call right after the first load).
    code = "import sys, http_shim._models_api; assert 'models._repository' in sys.modules, 'imported lazily'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
