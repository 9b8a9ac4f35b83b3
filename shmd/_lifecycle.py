"""Loading model versions beside the serving ones: load, validate, warm up, on a thread of its own.

The daemon's poll loop never waits for this. ``Loader`` takes requests (model, version,
request sequence) and turns each into a ``Candidate``: a runner that passed every check
and ran every batch bucket the loop will use (for the loop's own thread: LiteRT keeps
interpreters per thread), or the one-line reason it was refused. The loop picks finished
candidates up between passes and swaps (``Daemon._swap``); nothing here touches what serves.

Checks, in order: the manifest and the sha256 of every file (``load_manifest``), the
model's input and output shapes against the ABI (the runner's constructor), then the
canaries recorded at training time (``models.canary.check``), within 1e-5.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel_abi import ModelId


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


@dataclass
class Candidate:
    """A version ready to swap in (``runner``) or refused (``error``), for the request ``seq`` (0: the policy)."""

    mid: int
    version: int
    seq: int
    requested_ns: int
    runner: Any = None
    error: str = ""


class Loader:
    """One thread that prepares requested versions, one at a time, for the poll loop's thread."""

    def __init__(self, *, backend: str, models_dir: str | Path | None, max_batch: int) -> None:
        self.backend, self.models_dir, self.max_batch = backend, models_dir, max_batch
        self.owner = threading.get_ident()  # the poll loop's thread: the one that will run the runners
        self._todo: queue.SimpleQueue[Candidate] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Candidate] = queue.SimpleQueue()
        self.pending: dict[int, int] = {}  # model id -> version being prepared (the loop's view)
        self._thread: threading.Thread | None = None

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

    def _run(self) -> None:
        from models import ArtifactError

        while True:
            cand = self._todo.get()
            try:
                cand.runner = prepare(
                    ModelId(cand.mid), cand.version, backend=self.backend, models_dir=self.models_dir,
                    max_batch=self.max_batch, owner=self.owner,
                )  # fmt: skip
            except ArtifactError as err:
                cand.error = str(err)
            except Exception as err:  # never let the thread die: the loop waits for an answer
                cand.error = f"model {ModelId(cand.mid).name.lower()} version {cand.version}: {err!r}"
            self._done.put(cand)
