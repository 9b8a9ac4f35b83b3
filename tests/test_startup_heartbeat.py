"""A daemon loading (or compiling) its loop's code is alive, not hung: the heartbeat moves meanwhile.

The C client once refused a starting daemon as hung (``heartbeat 47869 ms old``): the
heartbeat written when the channels were made aged while numba compiled the loop after its
caches were purged. Here the load of the loop's code is held until the channel's heartbeat
moves (bounded); the loop's own housekeeping takes over once it serves.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shmd import _config
from shmd.daemon import Daemon

pytestmark = pytest.mark.timeout(120)

BOUND_S = 10.0  # a stall catcher: the starting heartbeat moves every housekeeping period (50 ms)


def test_the_heartbeat_moves_while_the_loop_code_loads_and_the_loop_takes_it_over(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    original = Daemon.step

    def first_step_waits_for_a_beat(self: Daemon, n_prev: int, spin_ns: int, sleep_ns: int = 0) -> int:
        if not seen:  # the first step loads the loop's code: stretch it until the heartbeat moves
            header = self.channels[0].header
            written = int(header["daemon_heartbeat_ns"])
            deadline = time.monotonic() + BOUND_S
            while int(header["daemon_heartbeat_ns"]) == written and time.monotonic() < deadline:
                time.sleep(0.005)
            seen["moved_ms"] = (int(header["daemon_heartbeat_ns"]) - written) / 1e6
        return original(self, n_prev, spin_ns, sleep_ns)

    monkeypatch.setattr(Daemon, "step", first_step_waits_for_a_beat)
    daemon = Daemon(_config.load(["--prefix", prefix, "--no-http", "--channels", "a", "--backend", "litert"], {}))
    try:
        assert seen["moved_ms"] > 0, f"the heartbeat stood still for {BOUND_S} s while the loop's code loaded"
        daemon.stopping = True
        daemon.serve_forever()  # its first housekeeping, then out at once (stopping)
        beats = [t.name for t in threading.enumerate() if t.name == "shmd-starting-heartbeat"]
        assert not beats, "the start-up heartbeat thread outlived the start of serving"
    finally:
        daemon.close()
