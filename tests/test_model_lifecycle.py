"""Model versions while serving: swaps under load from C, Python and HTTP at once, refusals, SIGHUP.

One real daemon (HTTP shim included) serves a repository copied from the shipped one, with
version 2 of a model made by copying version 1's files under a new manifest version (a real,
valid model whose answers say 2). ``workload`` is pinned to 1 in the config, ``threat``
follows ``latest``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel_abi import ModelId
from models import default_models_dir
from shmd import _records
from shmd.client import Client

from ._http_daemon import Daemon, free_port, unique_prefix, valid

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "kernel_abi" / "c" / "build" / "shmd_roundtrip"
PHASE_S = 1.5  # steady load between two swaps (for the latencies printed; correctness waits on MIN_ANSWERS)
MIN_ANSWERS = 20  # answers every caller must get in a phase before the test moves on (waited for, never timed)
WAIT_S = 30.0  # bound on any wait for the daemon


def add_version(repo: Path, model: str, version: int, edit=None) -> Path:
    """``repo/model/version``: version 1's files under a manifest saying ``version`` (``edit`` may change it)."""
    target = repo / model / str(version)
    shutil.copytree(repo / model / "1", target)
    path = target / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["version"] = version
    if edit is not None:
        edit(target, manifest)
    path.write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    subprocess.run(["make", "-s", "-C", str(ROOT / "kernel_abi" / "c")], check=True, timeout=180)
    repo = tmp_path_factory.mktemp("repo") / "models"
    shutil.copytree(default_models_dir(), repo)
    add_version(repo, "workload", 2)
    config = repo.parent / "shmd.toml"
    # A TTL no stall outlives: the miss-then-hit pair below must not depend on the time between two calls.
    config.write_text("[model_versions]\nworkload = 1\n\n[cache.workload]\nttl_ms = 600000\n")
    prefix = unique_prefix("ml")
    daemon = Daemon(prefix, port=free_port(), channels="c,py",
                    args=("--models-dir", str(repo), "--config", str(config), "--http-workers", "1"))  # fmt: skip
    try:
        yield daemon, repo
    finally:
        assert daemon.stop() == [], "segments left behind"


def call(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=WAIT_S)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def serving(daemon: Daemon) -> dict[str, int]:
    status, doc = call(daemon, "GET", "/api/ml/models")
    assert status == 200, doc
    return {m["model"]: m["servingVersion"] for m in doc["models"]}


def until(done, what: str) -> None:
    """Wait for ``done()`` (progress, not time); fail naming ``what`` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.02)


def answered_since(load: Load, t_ns: int) -> int:
    return sum(1 for t, _, _ in list(load.answers) if t >= t_ns)


def runs(versions: list[int]) -> list[int]:
    """The sequence with repeats collapsed: [1, 1, 2, 2, 1] -> [1, 2, 1]."""
    return [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]


class Load(threading.Thread):
    """Back-to-back workload predictions (no cache) from one caller until stopped: (t_ns, version, latency_ns)."""

    def __init__(self, call) -> None:
        super().__init__(daemon=True)
        self.call, self.answers, self.errors = call, [], []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and len(self.errors) < 5:
            t0 = time.monotonic_ns()
            try:
                version = self.call(i)
            except Exception as err:  # counted: the test asserts there are none
                self.errors.append(repr(err))
                continue
            self.answers.append((t0, version, time.monotonic_ns() - t0))
            i += 1
            time.sleep(0.0005)


def _p99_ms(lat_ns: list[int]) -> float:
    return float(np.percentile(lat_ns, 99)) / 1e6 if lat_ns else 0.0


def test_swap_v1_v2_v1_under_load_from_c_python_and_http(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, _ = served
    assert serving(daemon)["workload"] == 1  # pinned, although 2 is the latest on disk
    # currentCpu 0.995 is a cache key no load below makes (valid() gives k/100): the HTTP load caches its
    # own keys under v2, and one of them equal to this body would make the "never served again" check a hit.
    body = {**valid("workload"), "currentCpu": 0.995}
    first = [call(daemon, "POST", "/api/ml/predict/workload", body)[1]["prediction"] for _ in range(2)]
    assert [(p["modelVersion"], p["cacheHit"]) for p in first] == [(1, False), (1, True)]

    (tmp_path / "request.bin").write_bytes(
        _records.build_requests(ModelId.WORKLOAD, [valid("workload")], submit_ns=0).tobytes()
    )
    with open(tmp_path / "request.bin", "rb") as stdin, open(tmp_path / "c.out", "wb") as stdout:
        c = subprocess.Popen([str(TOOL), "versions", daemon.prefix, "c", "60"], stdin=stdin, stdout=stdout,
                             stderr=subprocess.PIPE)  # fmt: skip
    client = Client("py", daemon.prefix, timeout=5.0)
    py = Load(lambda i: client.predict("workload", valid("workload", i), no_cache=True)["modelVersion"])
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)

    def over_http(i: int) -> int:
        conn.request("POST", "/api/ml/predict/workload", json.dumps(valid("workload", i + 7)),
                     {"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        if resp.status != 200:
            raise AssertionError(f"HTTP {resp.status}: {doc}")
        return doc["prediction"]["modelVersion"]

    web = Load(over_http)
    swaps = []

    def c_completed() -> int:
        return call(daemon, "GET", "/api/ml/metrics")[1]["channels"]["c"]["completed"]

    def phase(since_ns: int, c_before: int) -> None:
        """Steady load, until every caller (C counted by the daemon) has MIN_ANSWERS answers started since."""
        time.sleep(PHASE_S)
        until(lambda: c_completed() >= c_before + MIN_ANSWERS + 1  # +1: the call in flight at since_ns
              and min(answered_since(py, since_ns), answered_since(web, since_ns)) >= MIN_ANSWERS,
              f"{MIN_ANSWERS} answers on every channel")  # fmt: skip

    try:
        py.start()
        web.start()
        phase(time.monotonic_ns(), c_completed())
        for version in (2, 1):
            t0 = time.monotonic_ns()
            status, doc = call(daemon, "POST", "/api/ml/models/workload/load", {"version": version})
            swaps.append((t0, time.monotonic_ns()))
            assert status == 200 and doc["version"] == version, doc
            if version == 2:  # the v1 answer cached above is never served again
                again = call(daemon, "POST", "/api/ml/predict/workload", body)[1]["prediction"]
                assert (again["modelVersion"], again["cacheHit"]) == (2, False), again
            phase(swaps[-1][1], c_completed())
    finally:
        py.stop.set()
        web.stop.set()
        c.send_signal(signal.SIGTERM)
        _, err = c.communicate(timeout=WAIT_S)
        py.join(WAIT_S)
        web.join(WAIT_S)
        client.close()
        conn.close()
    lines = (tmp_path / "c.out").read_text().split("\n")
    assert lines[-2].startswith("stats calls="), (lines[-3:], err)
    rows = [line.split() for line in lines[:-2]]
    c_answers = [(int(t) * 1000, int(v), int(lat) * 1000) for t, v, status, lat, src in rows
                 if status == "0" and src == "daemon"]  # fmt: skip
    assert len(c_answers) == len(rows) == int(lines[-2].split("=")[1]), "a C call failed or fell back"
    assert py.errors == [] and web.errors == []
    for name, answers in (("c", c_answers), ("py", py.answers), ("http", web.answers)):
        assert runs([v for _, v, _ in answers]) == [1, 2, 1], f"{name}: versions changed otherwise: " + str(
            runs([v for _, v, _ in answers])
        )
    # Nothing lost or answered twice: every request a channel's caller made was drained and answered once.
    channels = call(daemon, "GET", "/api/ml/metrics")[1]["channels"]
    assert channels["c"]["submitted"] == channels["c"]["completed"] == len(c_answers), channels["c"]
    assert channels["py"]["submitted"] == channels["py"]["completed"] == len(py.answers), channels["py"]
    assert channels["http"]["submitted"] == channels["http"]["completed"], channels["http"]
    versions = call(daemon, "GET", "/api/ml/metrics/workload")[1]["metrics"]["versions"]
    assert versions["1"]["requests"] > 0 and versions["2"]["requests"] > 0, versions
    # Latency during a swap (request to answer, plus 100 ms) beside steady state; reported, bounded loosely.
    took = [round((b - a) / 1e6, 1) for a, b in swaps]
    for name, answers in (("c", c_answers), ("py", py.answers), ("http", web.answers)):
        during = [lat for t, _, lat in answers if any(a <= t <= b + 100_000_000 for a, b in swaps)]
        steady = [lat for t, _, lat in answers if not any(a <= t <= b + 100_000_000 for a, b in swaps)]
        print(f"{name}: {len(answers)} answers; p99 during swaps {_p99_ms(during):.2f} ms ({len(during)}), "
              f"steady {_p99_ms(steady):.2f} ms; load requests took {took} ms")  # fmt: skip
        assert max(lat for _, _, lat in answers) < 5e9, f"{name}: a call stalled"  # the clients' own timeout


def _bad_sha(target: Path, manifest: dict) -> None:
    tflite = target / "model.tflite"
    data = bytearray(tflite.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tflite.write_bytes(bytes(data))


def _wrong_shape(target: Path, manifest: dict) -> None:
    """Another model's graph ([29] -> [13]) under a manifest whose checksums match it."""
    from models._artifacts import sha256_file

    shutil.copy(target.parent.parent / "threat" / "1" / "model.tflite", target / "model.tflite")
    manifest["files"]["model.tflite"] = sha256_file(target / "model.tflite")


def _canary_mismatch(target: Path, manifest: dict) -> None:
    manifest["canaries"]["outputs"][3][0] += 1e-3


@pytest.mark.parametrize(
    ("version", "edit", "reason"),
    [
        (3, _bad_sha, r"model file is corrupt: .*workload/3/model\.tflite: sha256 expected"),
        (4, _wrong_shape, r"TFLite model shape does not match the \w+: .*\[29\] -> \[13\], expected \[38\] -> \[4\]"),
        (5, _canary_mismatch, r"canary mismatch: model=workload version=5 backend=\w+ row=3 column=0"),
    ],
)
def test_corrupt_version_is_refused_with_its_reason_while_the_old_one_serves(
    served: tuple[Daemon, Path], version: int, edit, reason: str
) -> None:
    import re

    daemon, repo = served
    before = serving(daemon)["workload"]
    add_version(repo, "workload", version, edit)
    client = Client("py", daemon.prefix, timeout=5.0)
    load = Load(lambda i: client.predict("workload", valid("workload", i), no_cache=True)["modelVersion"])
    load.start()
    try:
        until(lambda: len(load.answers) >= MIN_ANSWERS, "answers before the load")
        status, doc = call(daemon, "POST", "/api/ml/models/workload/load", {"version": version})
        refused_ns = time.monotonic_ns()
        until(lambda: answered_since(load, refused_ns) >= MIN_ANSWERS, "answers after the refusal")
    finally:
        load.stop.set()
        load.join(WAIT_S)
        client.close()
    assert status == 422, doc
    assert doc["error"].startswith(f"version {version} refused, version {before} still serving: "), doc
    assert re.search(reason, doc["error"]), doc["error"]
    assert load.errors == [] and load.answers and {v for _, v, _ in load.answers} == {before}
    model = next(m for m in call(daemon, "GET", "/api/ml/models")[1]["models"] if m["model"] == "workload")
    assert (model["servingVersion"], model["lastLoad"]["result"]) == (before, "refused"), model
    assert version in model["versionsOnDisk"]
    status, doc = call(daemon, "POST", "/api/ml/models/workload/load", {"version": 99})
    assert status == 404 and "workload has no version 99 in the repository" in doc["error"], doc


def test_sighup_loads_a_new_latest_version_and_leaves_a_pinned_model(served: tuple[Daemon, Path]) -> None:
    daemon, repo = served
    assert serving(daemon)["threat"] == 1
    add_version(repo, "threat", 2)
    add_version(repo, "workload", 6)  # valid and the newest, but workload is pinned to 1
    daemon.proc.send_signal(signal.SIGHUP)
    # The swap writes the serving version, then its state and its log line: wait for all three.
    until(lambda: serving(daemon)["threat"] == 2 and "event=model_swapped model=threat version=2 previous=1"
          in daemon.log() and call(daemon, "GET", "/ready")[1]["models"]["threat"]["state"] == "serving",
          "swap of threat to version 2")  # fmt: skip
    now = serving(daemon)
    assert now["threat"] == 2 and now["workload"] == 1, now
    assert "event=rescan" in daemon.log()
    with Client("py", daemon.prefix, timeout=5.0) as client:
        assert client.predict("threat", valid("threat"), no_cache=True)["modelVersion"] == 2
    ready = call(daemon, "GET", "/ready")[1]
    assert ready["ready"] and ready["models"]["threat"] == {"ready": True, "version": 2, "state": "serving"}, ready
    assert daemon.alive()


def test_cli_lists_and_loads_through_the_stats_segment(served: tuple[Daemon, Path]) -> None:
    daemon, _ = served

    def shmd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shmd.cli", "models", *args, "--prefix", daemon.prefix],
                              capture_output=True, text=True, timeout=WAIT_S, cwd=ROOT)  # fmt: skip

    listed = shmd("list", "--json")
    assert listed.returncode == 0, listed.stderr
    workload = next(m for m in json.loads(listed.stdout) if m["model"] == "workload")
    assert (workload["servingVersion"], workload["policy"]) == (1, 1), workload
    loaded = shmd("load", "workload", "2")
    assert loaded.returncode == 0 and "workload version 2 serving" in loaded.stdout, loaded
    assert serving(daemon)["workload"] == 2
    assert shmd("load", "workload", "1").returncode == 0
    missing = shmd("load", "workload", "99")
    assert missing.returncode == 1 and "workload has no version 99 in the repository" in missing.stderr, missing


def _loader_processes(pid: int) -> list[tuple[int, int]]:
    """(pid, nice) of the daemon's loader processes."""
    from bench.lifecycle import loader_pids

    found = []
    for child in loader_pids(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            found.append((child, int(stat[16])))  # field 19 of stat: nice
        except OSError:  # exited meanwhile
            pass
    return found


def test_hot_loads_validate_in_a_low_priority_loader_process(served: tuple[Daemon, Path]) -> None:
    """The GIL the poll loop takes between passes is never held by validation: it runs in a child process."""
    from shmd import _lifecycle

    daemon, _ = served
    status, doc = call(daemon, "POST", "/api/ml/models/workload/load", {"version": 2})
    assert status == 200 and doc["version"] == 2, doc
    loaders = _loader_processes(daemon.proc.pid)
    assert [nice for _, nice in loaders] == [_lifecycle.NICE], f"loader processes (pid, nice): {loaders}"
    status, doc = call(daemon, "POST", "/api/ml/models/workload/load", {"version": 1})
    assert status == 200 and doc["version"] == 1, doc
    assert _loader_processes(daemon.proc.pid) == loaders, "the loader process is kept between loads"


@pytest.mark.parametrize("backend", ["litert", "compiled"])
def test_a_runner_pickles_to_one_that_computes_the_same(backend: str) -> None:
    """What the loader process validated is what the daemon serves: the runner itself, pickled."""
    import pickle

    import models
    from models import canary

    runner = models.load_runner(ModelId.FAILURE, backend=backend)
    copy = pickle.loads(pickle.dumps(runner))
    assert (type(copy), copy.version, copy.manifest) == (type(runner), runner.version, runner.manifest)
    canary.check(copy)  # raises on any output more than 1e-5 from the recorded one
    x = np.random.default_rng(3).random((33, runner.n_features), np.float32)
    assert np.array_equal(copy.predict(x), runner.predict(x))
