"""Keras layers the networks need beyond Dense/Concatenate, each with a numpy twin.

Registered under the "shmd" package so ``keras.saving.load_model`` finds them; every
layer lowers to builtin TFLite ops (gather, max, equal, cast, mul, sum, div).
``numpy_call`` is the same computation in numpy, used by the benchmark's baseline.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="shmd")
class Residual(keras.layers.Layer):
    """``x[:, columns] + d * scales``: predict a change from the current value, not the value."""

    def __init__(self, columns: list[int], scales: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]
        self.scales = [float(s) for s in scales]

    def call(self, x, d):
        return ops.take(x, self.columns, axis=1) + d * ops.convert_to_tensor(self.scales, dtype=d.dtype)

    def compute_output_shape(self, x_shape, d_shape):
        return d_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "columns": self.columns, "scales": self.scales}

    def numpy_call(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        return x[:, self.columns] + d * np.asarray(self.scales, np.float32)


@keras.saving.register_keras_serializable(package="shmd")
class HardSelect(keras.layers.Layer):
    """The candidate column ``x[:, start + argmax(scores)]`` (ties averaged), as an [n, 1] tensor.

    A hard pick keeps a predicted address exact; a softmax blend would land between
    two candidates.
    """

    def __init__(self, start: int, stop: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, scores, x):
        cand = x[:, self.start : self.stop]
        best = ops.cast(ops.greater_equal(scores, ops.max(scores, axis=1, keepdims=True)), cand.dtype)
        return ops.sum(best * cand, axis=1, keepdims=True) / ops.sum(best, axis=1, keepdims=True)

    def compute_output_shape(self, scores_shape, x_shape):
        return (scores_shape[0], 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "start": self.start, "stop": self.stop}

    def numpy_call(self, scores: np.ndarray, x: np.ndarray) -> np.ndarray:
        cand = x[:, self.start : self.stop]
        best = (scores >= scores.max(1, keepdims=True)).astype(np.float32)
        return (best * cand).sum(1, keepdims=True) / best.sum(1, keepdims=True)


@keras.saving.register_keras_serializable(package="shmd")
class RowMax(keras.layers.Layer):
    """Row-wise maximum as an [n, 1] tensor."""

    def call(self, x):
        return ops.max(x, axis=1, keepdims=True)

    def compute_output_shape(self, shape):
        return (shape[0], 1)

    def numpy_call(self, x: np.ndarray) -> np.ndarray:
        return x.max(1, keepdims=True)
