"""The compiled ring protocol really uses atomics: read the LLVM IR numba produces.

numba compiles a plain load of a shared index like any load, and LLVM hoists it
out of a spin loop (an infinite loop, measured). Only ``load atomic ... acquire``
/ ``store atomic ... release`` / ``fence seq_cst`` make the protocol correct.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

# Compiled in a child with an empty NUMBA_CACHE_DIR: numba refuses to show the IR of
# code it loaded from its on-disk cache.
_DUMP = r"""
import json, sys
import numpy as np
from numba import njit
from ringbuf import _core as core

h64 = np.zeros(96, np.uint64)
h32 = h64.view(np.uint32)
state = core.new_state(0, 0)
slots = np.zeros((4, 64), np.uint8)

@njit
def plain_spin(hdr64, n):
    # The broken version the real code must not be: a plain load of the tail.
    while hdr64[core.TAIL] == 0 and n > 0:
        n -= 1
    return hdr64[core.TAIL]

# The server's protocol steps over a table of channels (ringbuf/_table.py), one channel here.
from ringbuf import _table as tab
cq64 = np.zeros(96, np.uint64)
table = np.zeros((1, tab.TABLE_COLUMNS), np.int64)
table[0, tab.TABLE_SQ_HDR], table[0, tab.TABLE_SQ_CAP] = h64.ctypes.data, 4
table[0, tab.TABLE_CQ_HDR], table[0, tab.TABLE_CQ_CAP] = cq64.ctypes.data, 4
states = np.zeros((1, core.STATE_WORDS), np.uint64)
ready = np.zeros(1, np.int64)
waiters = np.zeros((1, 3), np.uint64)
waiters[0, 1], waiters[0, 2] = h32[core.WAKE_SEQ:].ctypes.data, 2

calls = {
    "table.table_ready": (tab.table_ready, (table, states, states.copy(), ready)),
    "table.table_sleep": (tab.table_sleep, (table, states, states.copy(), ready, waiters, 0)),
    "ring_wait": (core.ring_wait, (h64, h32, state, 4, 0, 0)),
    "ring_commit": (core.ring_commit, (h64, h32, state, 0)),
    "ring_ready": (core.ring_ready, (h64, state, 4)),
    "ring_space": (core.ring_space, (h64, state, 4)),
    "ring_spin_ready": (core.ring_spin_ready, (h64, state, 4, 0)),
    "ring_peek": (core.ring_peek, (h64, slots, state, np.zeros((4, 64), np.uint8), 4)),
    "ring_release": (core.ring_release, (h64, state, 0)),
    "ring_publish": (core.ring_publish, (h64, h32, state, 0)),
    "ring_prepare_sleep": (core.ring_prepare_sleep, (h64, h32, state, 4)),
    "ring_end_sleep": (core.ring_end_sleep, (h32,)),
    "plain_spin": (plain_spin, (h64, 10)),
}
out = {}
for name, (fn, args) in calls.items():
    fn(*args)
    out[name] = "\n".join(fn.inspect_llvm().values())
json.dump(out, sys.stdout)
"""

LOAD_ACQ_64 = re.compile(r"= load atomic i64, ptr %[\w.]+ acquire, align 8")
LOAD_ACQ_32 = re.compile(r"= load atomic i32, ptr %[\w.]+ acquire, align 4")
STORE_REL_64 = re.compile(r"store atomic i64 %[\w.]+, ptr %[\w.]+ release, align 8")
STORE_REL_32 = re.compile(r"store atomic i32 %[\w.]+, ptr %[\w.]+ release, align 4")
FENCE = re.compile(r"^\s*fence seq_cst\s*$", re.M)


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba-cache")))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", _DUMP], capture_output=True, text=True, env=env, cwd=root, timeout=110
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_check_has_teeth(ir: dict[str, str]) -> None:
    """A plain-load spin produces no atomic load: the patterns below would catch the bug."""
    assert "disabled for cached code" not in ir["plain_spin"]
    assert not LOAD_ACQ_64.search(ir["plain_spin"])


@pytest.mark.parametrize(
    "fn", ["ring_ready", "ring_spin_ready", "ring_peek", "ring_prepare_sleep", "ring_wait", "table.table_ready"]
)
def test_consumer_loads_the_tail_with_acquire(ir: dict[str, str], fn: str) -> None:
    assert LOAD_ACQ_64.search(ir[fn]), f"{fn}: the tail load is not `load atomic ... acquire`"


def test_producer_loads_the_head_with_acquire(ir: dict[str, str]) -> None:
    assert LOAD_ACQ_64.search(ir["ring_space"])


def test_index_stores_are_release(ir: dict[str, str]) -> None:
    assert STORE_REL_64.search(ir["ring_publish"]), "tail store is not `store atomic ... release`"
    assert STORE_REL_64.search(ir["ring_release"]), "head store is not `store atomic ... release`"


def test_wakeup_paths_are_fenced(ir: dict[str, str]) -> None:
    """Producer: publish, fence, read flags. Consumer: set flags, fence, re-read tail. In that order."""
    pub = ir["ring_publish"]
    store, fence, flags = STORE_REL_64.search(pub), FENCE.search(pub), LOAD_ACQ_32.search(pub)
    assert store and fence and flags
    assert store.start() < fence.start() < flags.start(), "ring_publish: tail store, fence, flags load"
    sleep = ir["ring_prepare_sleep"]
    set_flag, fence, tail = STORE_REL_32.search(sleep), FENCE.search(sleep), LOAD_ACQ_64.search(sleep)
    assert set_flag and fence and tail
    assert set_flag.start() < fence.start() < tail.start(), "ring_prepare_sleep: flag store, fence, tail load"
    # The daemon sleeps on all its SQs in one loop, and clients in ring_wait: LLVM lays
    # their blocks out of source order, so only the presence of each step is checked there.
    for fn in ("table.table_sleep", "ring_wait"):
        sleep = ir[fn]
        assert LOAD_ACQ_32.search(sleep), f"{fn}: wake_seq (or flags) is not loaded with acquire"
        assert STORE_REL_32.search(sleep), f"{fn}: NEED_WAKEUP is not set by a release store"
        assert FENCE.search(sleep), f"{fn}: no seq_cst fence between setting NEED_WAKEUP and re-checking"
        assert LOAD_ACQ_64.search(sleep), f"{fn}: the re-check does not load the tail with acquire"
        assert "@syscall" in sleep, f"{fn}: the sleep is not a futex system call from compiled code"
    # A producer publishes, fences, then bumps wake_seq atomically and FUTEX_WAKEs it.
    commit = ir["ring_commit"]
    assert STORE_REL_64.search(commit) and FENCE.search(commit), "ring_commit: tail store and fence"
    bump = re.search(r"atomicrmw add ptr %[\w.]+, i32 1 seq_cst", commit)
    assert bump, "ring_commit: wake_seq is not bumped atomically"
    assert "@syscall" in commit
    assert STORE_REL_32.search(ir["ring_end_sleep"])
