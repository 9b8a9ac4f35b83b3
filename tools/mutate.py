"""``make mutate``: mutation testing of the core modules against a bounded, fast test selection.

    python tools/mutate.py [--per-module 25] [--budget-s 3000] [--only shmd/_cache.py ...] [--json PATH]

mutmut 2 (PyPI, the ``mutate`` extra) rewrites the source file on disk for each
mutant and runs the module's tests (below) as a subprocess; numba sees the
changed file and recompiles, so compiled code is really mutated (mutmut 3's
in-memory trampolines cannot run inside ``@njit`` code, and NUMBA_DISABLE_JIT
cannot run the ring's LLVM intrinsics). Everything happens in a scratch copy
of the committed tree (``git archive HEAD``), never in the work tree.

A mutant costs a test run plus numba recompiling the mutated file (10-30 s
here), so all of them (about 1,500 over these modules) do not fit in a
bounded run: mutmut registers every mutant of each module, then a seeded
random sample of ``--per-module`` of them is tested, round-robin over the
modules, until ``--budget-s`` is spent. Mutants not reached are reported as
not run. The per-mutant status and the survivors' diffs go to ``--json``;
docs/MUTATION.md is the committed, annotated report.

Caveat: numba's on-disk cache does not track dependencies between files, so a
mutant of ringbuf/_core.py is seen by tests calling ringbuf directly, not by
shmd/_loop.py's cached compiled code: the ring's selection is the ring tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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


def _mutmut(tree: Path, module: str, *args: str) -> list[str]:
    # mutmut 2 counts only exit status 1 as a kill; pytest says 2 when a mutant breaks an import.
    tests = " ".join(TARGETS[module])
    runner = f"sh -c '{sys.executable} -m pytest -x -q -p no:cacheprovider {tests} || exit 1'"
    return [sys.executable, "-m", "mutmut", "run", *args, "--paths-to-mutate", module, "--runner", runner,
            "--tests-dir", "tests", "--test-time-multiplier", "3", "--test-time-base", "60"]  # fmt: skip


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _db(tree: Path) -> sqlite3.Connection:
    return sqlite3.connect(tree / ".mutmut-cache", timeout=30)


def _mutants(tree: Path, module: str) -> list[int]:
    if not (tree / ".mutmut-cache").exists():
        return []
    with _db(tree) as db:
        return [row[0] for row in db.execute(
            "SELECT Mutant.id FROM Mutant JOIN Line ON Mutant.line = Line.id "
            "JOIN SourceFile ON Line.sourcefile = SourceFile.id WHERE SourceFile.filename = ?", (module,))]


def _register(tree: Path, module: str, timeout_s: float = 600) -> list[int]:
    """Let mutmut time the tests and list the module's mutants, then stop it before it tests them."""
    proc = subprocess.Popen(_mutmut(tree, module), cwd=tree, env=_env(tree), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while not _mutants(tree, module) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: mutmut and the test run it started
            proc.wait()
        _restore(tree, module)
    return _mutants(tree, module)


def _test_one(tree: Path, module: str, mutant: int, timeout_s: float) -> None:
    proc = subprocess.Popen(_mutmut(tree, module, str(mutant)), cwd=tree, env=_env(tree),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _restore(tree, module)


def _restore(tree: Path, module: str) -> None:
    """Put back the pristine file if a killed mutmut left a mutant (and its backup) behind."""
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
        entry["tested"] = tested
        entry["score"] = round((c.get("ok_killed", 0) + c.get("bad_timeout", 0)) / tested, 3) if tested else None
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.splitlines()[0])
    ap.add_argument("--per-module", type=int, default=25, help="mutants sampled per module (default 25)")
    ap.add_argument("--budget-s", type=float, default=3000.0, help="time for the whole run (default 3000)")
    ap.add_argument("--only", nargs="*", help="modules to mutate (default: all of TARGETS)")
    ap.add_argument("--json", type=Path, help="write the per-module results here")
    args = ap.parse_args(argv)
    tree = _scratch()
    t0 = time.monotonic()
    rng = random.Random(0)
    queues = {}
    for module in args.only or list(TARGETS):
        found = _register(tree, module)
        queues[module] = rng.sample(found, min(args.per_module, len(found)))
        print(f"{module}: {len(found)} mutants, sampling {len(queues[module])}", flush=True)
    while any(queues.values()) and time.monotonic() - t0 < args.budget_s:
        for module, queue in queues.items():
            if queue and time.monotonic() - t0 < args.budget_s:
                _test_one(tree, module, queue.pop(), timeout_s=300)
        print(f"{time.monotonic() - t0:.0f} s: {sum(map(len, queues.values()))} sampled mutants left", flush=True)
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
