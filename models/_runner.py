"""Runners: one ``predict(float32[n, f]) -> float32[n, k]`` behind a small ABC, three backends.

``litert`` (default) runs the compiled ``model.tflite`` and never imports TensorFlow.
``compiled`` runs the same ``model.tflite`` graph and weights as numba code
(``models._forward``), callable from the daemon's compiled pass as well as from Python.
``tf`` runs ``model.keras`` through a ``tf.function`` with a fixed input signature, for
models that cannot be converted; TensorFlow is imported only when it is chosen.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kernel_abi import ModelId

from ._artifacts import KERAS_FILE, TFLITE_FILE, ArtifactError, load_manifest
from ._program import Program, make_bank, program_from_tflite, scratch_for
from ._spec import MODEL_NAMES, N_FEATURES, N_MODEL_SLOTS, N_RAW_OUTPUTS

#: The backends ``load_runner`` accepts.
BACKENDS = ("litert", "compiled", "tf")

#: Largest LiteRT batch bucket; bigger batches run in chunks of this size.
MAX_BUCKET = 1024


class Runner(ABC):
    """A loaded model: ``predict`` raw outputs for a float32 feature batch."""

    backend = ""

    def __init__(self, mid: ModelId, manifest: dict) -> None:
        self.model_id = ModelId(mid)
        self.name = MODEL_NAMES[self.model_id]
        self.manifest = manifest
        self.version = int(manifest["version"])
        self.n_features = N_FEATURES[self.model_id]
        self.n_outputs = N_RAW_OUTPUTS[self.model_id]

    def _check(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 2 or batch.shape[1] != self.n_features:
            raise ValueError(f"{self.name} expects a float32[n, {self.n_features}] batch: shape={batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs ``float32[n, k]`` for ``batch`` ``float32[n, f]``."""

    def warm(self, buckets: Iterable[int], owner: int | None = None) -> None:
        """Run one batch of each size in ``buckets`` so no caller pays a first call (any thread may ask)."""
        for bucket in buckets:
            self.predict(np.zeros((bucket, self.n_features), np.float32))


class LiteRTRunner(Runner):
    """One LiteRT interpreter per (thread, power-of-two batch bucket), allocated once.

    An interpreter is not thread-safe, and resizing one re-allocates its tensor arena,
    so each thread keeps one interpreter per bucket: after warm-up no call allocates
    tensors; a batch is copied into the bucket's padded input buffer. ``warm`` builds and
    runs a thread's interpreters from another thread (the daemon warms a new version for
    its poll loop on its loader thread, while the loop serves the old one).

    A runner pickles as its manifest and model bytes, without interpreters (they belong to
    a process and its threads): the daemon validates a version in a loader process and
    receives the runner that passed, to build its own thread's interpreters.
    """

    backend = "litert"

    def __init__(self, mid: ModelId, manifest: dict, path: Path) -> None:
        super().__init__(mid, manifest)
        self._model = path.read_bytes()
        self._slots: dict[tuple[int, int], tuple] = {}  # (thread ident, bucket) -> interpreter, in, out, buffer
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_content=self._model, num_threads=1)
        shapes = it.get_input_details()[0]["shape"][-1], it.get_output_details()[0]["shape"][-1]
        if shapes != (self.n_features, self.n_outputs):
            raise ArtifactError(
                f"TFLite model shape does not match the ABI: {path}: [{shapes[0]}] -> [{shapes[1]}], "
                f"expected [{self.n_features}] -> [{self.n_outputs}]"
            )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_slots": {}}

    def _slot(self, bucket: int, owner: int) -> tuple:
        slot = self._slots.get((owner, bucket))
        if slot is None:
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_content=self._model, num_threads=1)
            inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            it.resize_tensor_input(inp, [bucket, self.n_features], strict=True)
            it.allocate_tensors()
            slot = self._slots[(owner, bucket)] = (it, inp, out, np.zeros((bucket, self.n_features), np.float32))
        return slot

    def warm(self, buckets: Iterable[int], owner: int | None = None) -> None:
        """Allocate and run the interpreters of thread ``owner`` (default: this one) for ``buckets``.

        The owner must not call ``predict`` meanwhile (its interpreters are being built).
        """
        owner = threading.get_ident() if owner is None else owner
        for bucket in buckets:
            it, inp, _, buf = self._slot(bucket, owner)
            it.set_tensor(inp, buf)
            it.invoke()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if not (batch.dtype == np.float32 and batch.ndim == 2 and batch.flags.c_contiguous):
            batch = self._check(batch)
        elif batch.shape[1] != self.n_features:
            self._check(batch)  # raises, naming the expected shape
        n = batch.shape[0]
        if n > MAX_BUCKET:
            return np.concatenate([self.predict(batch[i : i + MAX_BUCKET]) for i in range(0, n, MAX_BUCKET)])
        if n == 0:
            return np.zeros((0, self.n_outputs), np.float32)
        bucket = 1 << (n - 1).bit_length()
        it, inp, out, buf = self._slot(bucket, threading.get_ident())
        if n == bucket:
            it.set_tensor(inp, batch)
        else:
            # Rows are independent, so stale padding rows only affect outputs we drop.
            buf[:n] = batch
            it.set_tensor(inp, buf)
        it.invoke()
        return it.get_tensor(out)[:n]


class CompiledRunner(Runner):
    """The ``.tflite`` graph as numba code: ``program`` (the ops and weights) in a one-model bank.

    ``program`` is what the daemon puts into the bank its compiled pass calls; ``predict``
    is the same ``forward`` from Python, with one scratch tile per thread. It pickles as its
    manifest and program (the bank, scratch and compiled function are rebuilt on unpickling):
    what a loader process validated is what the daemon serves, with no second parse.
    """

    backend = "compiled"

    def __init__(self, mid: ModelId, manifest: dict, path: Path) -> None:
        super().__init__(mid, manifest)
        self.program: Program = program_from_tflite(path)
        if (self.program.n_in, self.program.n_out) != (self.n_features, self.n_outputs):
            raise ArtifactError(
                f"TFLite model shape does not match the manifest: {path}: "
                f"[{self.program.n_in}] -> [{self.program.n_out}], expected [{self.n_features}] -> [{self.n_outputs}]"
            )
        self._bind()

    def _bind(self) -> None:
        self.bank = make_bank({int(self.model_id): (self.program, self.version)}, N_MODEL_SLOTS)
        self._local = threading.local()
        from ._forward import forward  # numba: loaded only by the backend that runs it

        self._forward = forward

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("bank", "_local", "_forward")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if not (batch.dtype == np.float32 and batch.ndim == 2 and batch.flags.c_contiguous):
            batch = self._check(batch)
        elif batch.shape[1] != self.n_features:
            self._check(batch)  # raises, naming the expected shape
        scratch = self._local.__dict__.get("scratch")
        if scratch is None:
            scratch = self._local.scratch = scratch_for(self.bank)
        n = batch.shape[0]
        out = np.empty((n, self.n_outputs), np.float32)
        self._forward(self.bank, int(self.model_id), batch, n, out, scratch)
        return out


class TFRunner(Runner):
    """The Keras model through one ``tf.function`` with signature float32[None, f]."""

    backend = "tf"

    def __init__(self, mid: ModelId, manifest: dict, path: Path) -> None:
        super().__init__(mid, manifest)
        import keras
        import tensorflow as tf

        from . import _layers  # noqa: F401  (registers the custom layers for loading)

        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as exc:
            raise ArtifactError(f"cannot load Keras model: {path}: {exc}") from exc
        spec = tf.TensorSpec([None, self.n_features], tf.float32)
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(self._check(batch)).numpy()


def load_runner(
    mid: ModelId | int,
    *,
    backend: str = "litert",
    models_dir: Path | str | None = None,
    version: int | None = None,
) -> Runner:
    """Load ``version`` (default: the latest) of model ``mid`` from the repository ``models_dir``
    (default: the shipped artifacts) with ``backend``.

    Raises ``ArtifactError`` naming the file when an artifact is missing or corrupt.
    """
    mid = ModelId(mid)
    dirpath = Path(models_dir) if models_dir is not None else None
    if backend == "litert":
        manifest, path = load_manifest(mid, dirpath, TFLITE_FILE, version)
        return LiteRTRunner(mid, manifest, path)
    if backend == "compiled":
        manifest, path = load_manifest(mid, dirpath, TFLITE_FILE, version)
        return CompiledRunner(mid, manifest, path)
    if backend == "tf":
        manifest, path = load_manifest(mid, dirpath, KERAS_FILE, version)
        return TFRunner(mid, manifest, path)
    raise ValueError(f"unknown backend: backend={backend!r} (use one of {', '.join(BACKENDS)})")
