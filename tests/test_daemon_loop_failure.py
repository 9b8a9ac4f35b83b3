"""A poll loop that raises is reported as such, cleans up and exits at once with its own code.

``SHMD_TEST_FAULT=raise:N`` (``shmd/_loop.py``) makes the compiled ``finish``
raise ``RuntimeError`` right after its N-th CQ publish: a bug in the pass. The
daemon must then log one ``event=loop_failed`` naming the error and where it
came from (never ``event=stopped``, which means a clean stop), unlink its
segments and exit with ``EXIT_LOOP_FAILED`` (a failure to systemd's
``Restart=on-failure``), not linger.
"""

from __future__ import annotations

import subprocess

import pytest

import ringbuf
from shmd.client import Client
from shmd.daemon import EXIT_LOOP_FAILED
from shmd.samples import WORKLOAD

from ._daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

EXIT_BOUND_S = 30.0  # generous: only a lingering process takes this long


def test_a_pass_that_raises_logs_loop_failed_removes_its_segments_and_exits(prefix: str) -> None:
    daemon = DaemonProcess(prefix, "--channels", "scheduler", env={"SHMD_TEST_FAULT": "raise:1"})
    try:
        with Client("scheduler", prefix=prefix) as c:
            # The fault fires after the publish: this answer still arrives, then the loop raises.
            c.predict("workload", WORKLOAD, no_cache=True)
            try:
                code = daemon.proc.wait(EXIT_BOUND_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the daemon lingered {EXIT_BOUND_S}s after its loop failed:\n{daemon.log()}")
        assert code == EXIT_LOOP_FAILED, daemon.log()
        failed = [line for line in daemon.lines if line.startswith("event=loop_failed ")]
        assert len(failed) == 1, daemon.log()
        assert "RuntimeError: SHMD_TEST_FAULT=raise: injected failure in finish" in failed[0], failed[0]
        assert f"exit_code={EXIT_LOOP_FAILED}" in failed[0] and "where=" in failed[0], failed[0]
        assert not any(line.startswith("event=stopped") for line in daemon.lines), daemon.log()
        assert ringbuf.leftovers(prefix) == [], "the failed daemon left its segments behind"
    finally:
        daemon.stop()
