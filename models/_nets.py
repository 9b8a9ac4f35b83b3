"""The four networks: a shared shape (MLP trunk, task heads, a confidence head).

Each ``build(mid)`` returns a ``Net`` with three views of one set of layers:
``train`` (task heads, fitted first), ``head`` (the confidence head alone, fitted
second on a separate calibration split with everything else frozen) and ``export``
(one [n, k] output in the column order of ``_spec.N_RAW_OUTPUTS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from kernel_abi import ModelId

from ._encode import M_CAND_START, M_N_CAND, W_CUR_CPU, W_CUR_GPU, W_CUR_MEM
from ._layers import HardSelect, Residual, RowMax
from ._spec import ADDR_TOL, MEM_LOG_SCALE, N_FEATURES, TIME_LOG_SCALE


@dataclass
class Net:
    train: keras.Model
    head: keras.Model
    export: keras.Model
    losses: dict[str, object]
    targets: Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]]


def masked_mae(y_true, y_pred):
    """MAE over rows whose target is >= 0 (rows with no failure carry -1)."""
    mask = keras.ops.cast(y_true >= 0, y_pred.dtype)
    return keras.ops.sum(mask * keras.ops.abs(y_true - y_pred)) / (keras.ops.sum(mask) + 1.0)


def _trunk(x, width: int = 64):
    h = layers.Dense(width, activation="relu", name="trunk1")(x)
    return layers.Dense(width, activation="relu", name="trunk2")(h)


def _workload_targets(x: np.ndarray, lab: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Changes from now, x10 so cpu, gpu and the memory log-ratio weigh alike in the loss.
    dmem = (np.log1p(lab["next_memory"]) - x[:, W_CUR_MEM].astype(np.float64) * MEM_LOG_SCALE) * 10
    d = np.stack(
        [(lab["next_cpu"] - x[:, W_CUR_CPU]) * 10, dmem, (lab["next_gpu"] - x[:, W_CUR_GPU]) * 10], 1
    )
    return {"delta": d.astype(np.float32)}


def _threat_targets(x: np.ndarray, lab: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"score": lab["is_attack"][:, None], "type": lab["type"], "action": lab["action"]}


def _failure_targets(x: np.ndarray, lab: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t = np.where(lab["time_ms"] >= 0, np.log1p(np.maximum(lab["time_ms"], 0)) / TIME_LOG_SCALE, -1.0)
    return {"prob": lab["label"][:, None], "time": t[:, None].astype(np.float32), "type": lab["type"]}


def _memory_targets(x: np.ndarray, lab: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cand = x[:, M_CAND_START : M_CAND_START + M_N_CAND].astype(np.float64)
    hit = np.abs(cand - lab["next_address"][:, None].astype(np.float64)) <= ADDR_TOL
    return {"cand": hit.astype(np.float32), "type": lab["next_type"]}


def build(mid: ModelId, seed: int) -> Net:
    keras.utils.set_random_seed(seed)
    x = keras.Input((N_FEATURES[mid],), name="features")
    h = _trunk(x)
    if mid == ModelId.WORKLOAD:
        d = layers.Dense(3, name="delta")(h)
        scales = [0.1, 1.0 / (10 * MEM_LOG_SCALE), 0.1]
        main = Residual([W_CUR_CPU, W_CUR_MEM, W_CUR_GPU], scales, name="residual")(x, d)
        outs, losses, targets = {"delta": d}, {"delta": "mae"}, _workload_targets
    elif mid == ModelId.THREAT:
        score = layers.Dense(1, activation="sigmoid", name="score")(h)
        typ = layers.Dense(6, activation="softmax", name="type")(h)
        act = layers.Dense(5, activation="softmax", name="action")(h)
        main = layers.Concatenate(name="main")([score, typ, act])
        outs = {"score": score, "type": typ, "action": act}
        losses = {
            "score": "binary_crossentropy",
            "type": "sparse_categorical_crossentropy",
            "action": "sparse_categorical_crossentropy",
        }
        targets = _threat_targets
    elif mid == ModelId.FAILURE:
        prob = layers.Dense(1, activation="sigmoid", name="prob")(h)
        tlog = layers.Dense(1, name="time")(h)
        typ = layers.Dense(6, activation="softmax", name="type")(h)
        main = layers.Concatenate(name="main")([prob, tlog, typ])
        outs = {"prob": prob, "time": tlog, "type": typ}
        losses = {
            "prob": "binary_crossentropy",
            "time": masked_mae,
            "type": "sparse_categorical_crossentropy",
        }
        targets = _failure_targets
    else:
        cand = layers.Dense(M_N_CAND, activation="sigmoid", name="cand")(h)
        addr = HardSelect(M_CAND_START, M_CAND_START + M_N_CAND, name="select")(cand, x)
        typ = layers.Dense(3, activation="softmax", name="type")(h)
        main = layers.Concatenate(name="main")([addr, RowMax(name="cand_max")(cand), typ])
        outs = {"cand": cand, "type": typ}
        losses = {"cand": "binary_crossentropy", "type": "sparse_categorical_crossentropy"}
        targets = _memory_targets
    # Confidence: P(this row's post-processed prediction is correct), from the features
    # and the model's own outputs.
    c = layers.Concatenate(name="conf_in")([x, main])
    c = layers.Dense(32, activation="relu", name="conf_hidden")(c)
    conf = layers.Dense(1, activation="sigmoid", name="confidence")(c)
    export = keras.Model(x, layers.Concatenate(name="raw")([main, conf]), name=f"shmd_{int(mid)}")
    return Net(keras.Model(x, outs), keras.Model(x, conf), export, losses, targets)
