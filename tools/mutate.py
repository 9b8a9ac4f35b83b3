"""``make mutate``: mutation testing of the core modules against a bounded, fast test selection.

    python tools/mutate.py [--budget-s 600] [--only shmd/_cache.py ...] [--json PATH]

mutmut 2 (PyPI, the ``mutate`` extra) rewrites the source file on disk for each
mutant and runs the module's tests (below) as a subprocess; numba sees the
changed file and recompiles, so compiled code is really mutated (mutmut 3's
in-memory trampolines cannot run inside ``@njit`` code, and NUMBA_DISABLE_JIT
cannot run the ring's LLVM intrinsics). Everything happens in a scratch copy
of the committed tree (``git archive HEAD``), never in the work tree.

Each module gets ``--budget-s`` seconds; mutants not reached in time are
reported as not run. The per-mutant status and the survivors' diffs go to
``--json``; docs/MUTATION.md is the committed, annotated report.

Caveat: numba's on-disk cache does not track dependencies between files, so a
mutant of ringbuf/_core.py is seen by tests calling ringbuf directly, not by
shmd/_loop.py's cached compiled code: the ring's selection is the ring tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: module -> the tests that guard it (fast: no daemon where the module can be tested in process).
TARGETS: dict[str, list[str]] = {
    "shmd/_cache.py": ["tests/test_cache_metrics.py"],
    "models/_post.py": ["tests/test_oracle.py::test_postprocess_is_the_documented_mapping"],
    "shmd/_codec.py": ["tests/test_codec.py"],
    "ringbuf/_core.py": ["tests/test_ring_model.py", "tests/test_ring_segment.py", "tests/test_ring_hostile.py"],
    "models/_encode.py": ["tests/test_models_encode.py"],
    "shmd/_loop.py": ["tests/test_daemon.py", "tests/test_crash_points.py", "tests/test_wakeups.py"],
}


def _scratch() -> Path:
    """The committed tree, unpacked into a temporary directory, sharing this tree's virtualenv."""
    where = Path(tempfile.mkdtemp(prefix="shmd-mutate-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    (where / ".venv").symlink_to((ROOT / ".venv").resolve())
    return where


def _run_target(tree: Path, module: str, tests: list[str], budget_s: float) -> None:
    runner = f"{sys.executable} -m pytest -x -q -p no:cacheprovider " + " ".join(tests)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "mutmut", "run", "--paths-to-mutate", module, "--runner", runner,
           "--tests-dir", "tests", "--test-time-multiplier", "3", "--test-time-base", "30"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        proc.wait(budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: mutmut and the test run it started
        proc.wait()
        _restore(tree, module)


def _restore(tree: Path, module: str) -> None:
    """Put back the pristine file if a killed mutmut left a mutant (or its backup) behind."""
    backup = tree / (module + ".bak")
    if backup.exists():
        backup.replace(tree / module)


def _results(tree: Path) -> dict[str, dict]:
    """Per module: counts by status and the surviving mutants (id, line, diff)."""
    db = sqlite3.connect(tree / ".mutmut-cache")
    rows = db.execute(
        "SELECT Mutant.id, Mutant.status, SourceFile.filename, Line.line_number FROM Mutant "
        "JOIN Line ON Mutant.line = Line.id JOIN SourceFile ON Line.sourcefile = SourceFile.id"
    ).fetchall()
    out: dict[str, dict] = {}
    for mid, status, filename, line in rows:
        entry = out.setdefault(filename, {"counts": {}, "survivors": []})
        entry["counts"][status] = entry["counts"].get(status, 0) + 1
        if status in ("bad_survived", "bad_timeout", "ok_suspicious"):
            show = subprocess.run([sys.executable, "-m", "mutmut", "show", str(mid)], cwd=tree,
                                  capture_output=True, text=True).stdout  # fmt: skip
            diff = "\n".join(ln for ln in show.splitlines() if re.match(r"^[-+][^-+]", ln))
            entry["survivors"].append({"id": mid, "status": status, "line": line + 1, "diff": diff})
    for entry in out.values():
        c = entry["counts"]
        tested = c.get("ok_killed", 0) + c.get("bad_survived", 0) + c.get("bad_timeout", 0)
        entry["score"] = round((c.get("ok_killed", 0) + c.get("bad_timeout", 0)) / tested, 3) if tested else None
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=600.0, help="time for each module (default 600)")
    ap.add_argument("--only", nargs="*", help="modules to mutate (default: all of TARGETS)")
    ap.add_argument("--json", type=Path, help="write the per-module results here")
    args = ap.parse_args(argv)
    tree = _scratch()
    t0 = time.monotonic()
    for module in args.only or list(TARGETS):
        start = time.monotonic()
        _run_target(tree, module, TARGETS[module], args.budget_s)
        print(f"{module}: {time.monotonic() - start:.0f} s", flush=True)
    results = _results(tree)
    for module, r in results.items():
        print(f"{module}: score {r['score']} {r['counts']}")
        for s in r["survivors"]:
            print(f"  survivor #{s['id']} line {s['line']} ({s['status']}):\n    " + s["diff"].replace("\n", "\n    "))
    if args.json:
        args.json.write_text(json.dumps({"wall_s": time.monotonic() - t0, "modules": results}, indent=2) + "\n")
    print(f"scratch tree: {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
