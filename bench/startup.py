"""``python -m bench startup [--quick] [--json PATH]``: cold start of ``shmd serve`` and where its time goes.

Each round starts ``shmd serve --no-http --channels c`` (warm numba and program caches, as
after the first start on a machine) and measures, from ``Popen``:

- the first answered prediction (a ``Client`` retried until the channel exists, as
  ``bench daemon``'s cold start: target <= 1 s);
- ``event=ready`` and the breakdown the daemon logs with it: ``models_ms`` (load, validate,
  warm every bucket), ``segments_ms``, ``loop_ms`` (the loop's compiled code), ``probe_ms``
  (the start-up probe) and ``process_age_ms``; imports and interpreter start are what is left.

Baselines in the same run, each a fresh interpreter: ``python -c pass``; importing numpy and
numba; and that plus the first call of one cached ``@njit`` function of the loop (numba
builds its typing and target contexts on a process's first call: a floor any start pays).
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._stats import cli, fmt, ratio, table, target
from .daemon import _start_daemon

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("models_ms", "segments_ms", "loop_ms", "probe_ms", "process_age_ms", "startup_ms")
_NUMBA_FIRST_CALL = (
    "import numpy as np; from shmd._loop import _fill_level; "
    "_fill_level(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((2, 8), np.int64), 0, 0, 4)"
)
BASELINES = {
    "python -c pass": "pass",
    "import numpy, numba": "import numpy, numba",
    "numpy, numba + first cached @njit call": _NUMBA_FIRST_CALL,
}


def _seconds(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.monotonic() - t0


def _ready_fields(log: Path, deadline: float) -> dict[str, str]:
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("event=ready "):
                return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        time.sleep(0.01)
    raise RuntimeError(f"no event=ready within the deadline:\n{log.read_text(errors='replace')}")


def _round(tmp: Path) -> dict[str, float]:
    import ringbuf

    prefix = f"bs{os.getpid()}x{secrets.token_hex(3)}"
    log = tmp / f"{prefix}.log"
    proc, first_s = _start_daemon(prefix, "c", log=log)
    try:
        fields = _ready_fields(log, time.monotonic() + 60)
        out = {"first_answer_s": first_s, **{k: float(fields[k]) for k in PHASES}}
        out["imports_and_interpreter_ms"] = out["process_age_ms"] - out["startup_ms"]
        return out
    finally:
        proc.terminate()
        proc.wait(30)
        ringbuf.remove_leftovers(prefix)


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        _round(Path(tmp))  # discarded: fills the numba and program caches if this tree's are cold
        samples = [_round(Path(tmp)) for _ in range(rounds)]
    base = {name: statistics.median(_seconds(code) for _ in range(rounds)) for name, code in BASELINES.items()}
    fig = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    fig["first_answer_max_s"] = max(s["first_answer_s"] for s in samples)
    floor = base["numpy, numba + first cached @njit call"]
    return {
        "quick": quick, "rounds": rounds, "figures": fig, "samples": samples, "baselines_s": base,
        "ratios": {"first_answer / numba floor": ratio(fig["first_answer_s"], floor)},
        "targets": {"cold_start_to_first_answer_le_1s": target(fig["first_answer_s"], "<=", 1.0)},
    }  # fmt: skip


def report(result: dict[str, Any]) -> str:
    f, b = result["figures"], result["baselines_s"]
    rows = [
        ["first answer from Popen, median / max (s)", f"{fmt(f['first_answer_s'])} / {fmt(f['first_answer_max_s'])}"],
        ["event=ready: process age (ms)", fmt(f["process_age_ms"])],
        ["  interpreter + imports (ms)", fmt(f["imports_and_interpreter_ms"])],
        ["  models: load, validate, warm (ms)", fmt(f["models_ms"])],
        ["  segments (ms)", fmt(f["segments_ms"])],
        ["  loop's compiled code (ms)", fmt(f["loop_ms"])],
        ["  start-up probe (ms)", fmt(f["probe_ms"])],
        *[[f"baseline: {name} (s)", fmt(v)] for name, v in b.items()],
        *[[name, fmt(v)] for name, v in result["ratios"].items()],
    ]
    rows += [[name, f"{fmt(t['value'])} {t['target']}: {'met' if t['met'] else 'MISSED'}"]
             for name, t in result["targets"].items()]  # fmt: skip
    return table(["what (medians)", "value"], rows)


def main(argv: list[str]) -> int:
    return cli(argv, "python -m bench startup", __doc__.splitlines()[0], run, report, "3 rounds instead of 8")
