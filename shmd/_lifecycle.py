"""Loading model versions beside the serving ones: load, validate, warm up, off the poll loop.

The daemon's poll loop never waits for this. ``Loader`` takes requests (model, version,
request sequence) and turns each into a ``Candidate``: a runner that passed every check
and ran every batch bucket the loop will use, or the one-line reason it was refused. The
loop picks finished candidates up between passes and swaps (``Daemon._swap``); nothing
here touches what serves.

Checks, in order: the manifest and the sha256 of every file (``load_manifest``), the
model's input and output shapes against the ABI (the runner's constructor), then the
canaries recorded at training time (``models.canary.check``), within 1e-5.

Where: the checks and a first warm-up run in a loader process (``validated``), not in the
daemon's: Python code there (parsing the ``.tflite`` flatbuffer is ~5-15 ms of it) would
hold the GIL the poll loop takes between every two passes, and callers' p99 during a swap
was 2-4x steady (issue 13). The runner that passed comes back pickled (its manifest and
program or model bytes: what was checked is what serves, with no second parse); in the
daemon the loader thread only builds the loop thread's LiteRT interpreters (``warm``).
The process is spawned at the first load, runs at a lower CPU priority (``NICE``: callers,
loop and shim keep the two cores), and exits after ``IDLE_S`` without a load. The ``tf``
backend validates in the daemon's process (its runners do not pickle, and TensorFlow in a
second process costs seconds and a GB); so does start-up, where nothing is served yet.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernel_abi import ModelId

#: Backends validated in the daemon's own process (see the module docstring).
IN_PROCESS_BACKENDS = ("tf",)
NICE = 10  # the loader process's and thread's CPU priority: serving keeps the cores (CFS weight 110 vs 1024)
IDLE_S = 60.0  # the loader process exits after this long without a load (its memory back until the next)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def buckets(max_batch: int) -> list[int]:
    """Every batch size bucket a pass can hand a model: powers of two up to ``max_batch`` (and its own)."""
    sizes = []
    size = 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def prepare(mid: ModelId, version: int, *, backend: str, models_dir: str | Path | None, max_batch: int,
            owner: int | None = None) -> Any:  # fmt: skip
    """A loaded, validated, warmed runner for ``version`` of ``mid``, or ``ArtifactError`` naming why not.

    ``owner`` is the thread that will call it (default: this one).
    """
    import models
    from models import canary

    try:
        runner = models.load_runner(mid, backend=backend, models_dir=models_dir, version=version)
        time.sleep(0)  # yield the GIL between steps: the poll loop needs it between its passes
        canary.check(runner)
        for size in buckets(max_batch):
            time.sleep(0)
            runner.warm([size], owner)
    except models.ArtifactError:
        raise
    except Exception as err:  # a file that passes its checksum and still does not load or run
        raise models.ArtifactError(
            f"model {ModelId(mid).name.lower()} does not load or run on backend {backend}: {err!r}"
        ) from err
    return runner


@contextlib.contextmanager
def captured_fd2() -> Iterator[list[str]]:
    """The lines native libraries print on fd 2 meanwhile (LiteRT's "INFO: Created ... delegate"), filled on exit."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines += [line for line in caught.read().decode(errors="replace").splitlines() if line.strip()]


def validated(mid: int, version: int, *, backend: str, models_dir: str | Path | None,
              max_batch: int) -> tuple[Any, list[str]]:  # fmt: skip
    """In the loader process: ``prepare`` the version; with what native code printed meanwhile (for the log)."""
    with captured_fd2() as native:
        runner = prepare(ModelId(mid), version, backend=backend, models_dir=models_dir, max_batch=max_batch)
    return runner, native


def _init_loader_process(daemon_pid: int) -> None:
    os.setpriority(os.PRIO_PROCESS, 0, NICE)
    # Die with the daemon (Linux): a killed daemon leaves no loader process waiting for work.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:  # it died before the prctl
        os._exit(0)


@dataclass
class Candidate:
    """A version ready to swap in (``runner``) or refused (``error``), for the request ``seq`` (0: the policy)."""

    mid: int
    version: int
    seq: int
    requested_ns: int
    runner: Any = None
    error: str = ""
    native: list[str] = field(default_factory=list)  # lines native code printed while it was validated
    install: Any = None  # what the swap assigns, built by ``Loader.install`` beside the loop


class Loader:
    """One thread that prepares requested versions, one at a time, for the poll loop's thread.

    It hands the checks to a loader process (``validated``) and waits for it without the
    GIL; then it builds the poll loop thread's interpreters for the runner that passed.
    """

    def __init__(self, *, backend: str, models_dir: str | Path | None, max_batch: int,
                 install: Callable[[int, Any], Any] = lambda mid, runner: None,
                 on_done: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        """On the loader's thread: ``install(mid, runner)`` builds what the swap will assign
        (``Candidate.install``), ``on_done()`` follows each candidate handed to ``finished``."""
        self.backend, self.models_dir, self.max_batch = backend, models_dir, max_batch
        self.install, self.on_done = install, on_done
        self.owner = threading.get_ident()  # the poll loop's thread: the one that will run the runners
        self._todo: queue.SimpleQueue[Candidate] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Candidate] = queue.SimpleQueue()
        self.pending: dict[int, int] = {}  # model id -> version being prepared (the loop's view)
        self._thread: threading.Thread | None = None
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, mid: int, version: int, seq: int) -> None:
        self.pending[mid] = version
        self._todo.put(Candidate(mid, version, seq, time.monotonic_ns()))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shmd-loader", daemon=True)
            self._thread.start()

    def finished(self) -> list[Candidate]:
        """Candidates prepared since the last call (never blocks)."""
        out = []
        while True:
            try:
                cand = self._done.get_nowait()
            except queue.Empty:
                return out
            if self.pending.get(cand.mid) == cand.version:
                del self.pending[cand.mid]
            out.append(cand)

    def close(self) -> None:
        """Stop the loader process (a load in progress is abandoned: the daemon is stopping)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        from models import ArtifactError

        # Linux: a thread's own priority; the loader process spawned from here starts with it.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        while True:
            try:
                cand = self._todo.get(timeout=IDLE_S)
            except queue.Empty:
                self.close()  # idle: give the loader process's memory back until the next load
                continue
            name = f"model {ModelId(cand.mid).name.lower()} version {cand.version}"
            try:
                cand.runner = self._prepare(cand)
                cand.install = self.install(cand.mid, cand.runner)
            except ArtifactError as err:
                cand.error = str(err)
            except BrokenProcessPool as err:  # killed or crashed (a hostile file can crash native code)
                self._pool = None
                cand.error = f"{name}: the loader process died while validating it ({err}); try the load again"
            except Exception as err:  # never let the thread die: the loop waits for an answer
                cand.error = f"{name}: {err!r}"
            self._done.put(cand)
            self.on_done()

    def _prepare(self, cand: Candidate) -> Any:
        how = {"backend": self.backend, "models_dir": self.models_dir, "max_batch": self.max_batch}
        if self.backend in IN_PROCESS_BACKENDS:
            return prepare(ModelId(cand.mid), cand.version, owner=self.owner, **how)
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # not fork: this process has threads (loop, numba)
            self._pool = ProcessPoolExecutor(
                1, mp_context=context, initializer=_init_loader_process, initargs=(os.getpid(),)
            )
        runner, cand.native = self._pool.submit(validated, cand.mid, cand.version, **how).result()
        runner.warm(buckets(self.max_batch), self.owner)  # the loop thread's own interpreters (LiteRT)
        return runner
