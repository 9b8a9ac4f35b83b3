"""What "correct" means per model, and the held-out report against naive baselines.

Correctness (the event ``confidence`` estimates) per model:

- workload: |cpu error| <= 0.05, |gpu error| <= 0.05 and |memory error| <= 5% of the truth
- threat: the post-processed threatType equals the true type (NONE for benign)
- failure: the post-processed failureType equals the true type (NONE when no failure
  is due within the horizon)
- memory: the next address is within half a line (2**-17) and the access type is right
"""

from __future__ import annotations

import numpy as np

from kernel_abi import OUTPUT_NAMES, ModelId

from ._encode import M_CAND_START
from ._metrics import brier, ece, macro_f1, roc_auc
from ._spec import ADDR_TOL, TIME_LOG_SCALE

CPU_TOL, MEM_REL_TOL = 0.05, 0.05


def correct(mid: ModelId, out: np.ndarray, lab: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean per row: is the post-processed prediction ``out[n, 4]`` right (see module doc)."""
    if mid == ModelId.WORKLOAD:
        return (
            (np.abs(out[:, 0] - lab["next_cpu"]) <= CPU_TOL)
            & (np.abs(out[:, 2] - lab["next_gpu"]) <= CPU_TOL)
            & (np.abs(out[:, 1] - lab["next_memory"]) <= MEM_REL_TOL * lab["next_memory"])
        )
    if mid == ModelId.THREAT:
        return out[:, 1] == lab["type"]
    if mid == ModelId.FAILURE:
        return out[:, 3] == lab["type"]
    return (np.abs(out[:, 0] - lab["next_address"]) <= ADDR_TOL) & (out[:, 2] == lab["next_type"])


def _r(x: float) -> float:
    return round(float(x), 4)


def evaluate(
    mid: ModelId,
    rec: np.ndarray,
    x: np.ndarray,
    raw: np.ndarray,
    out: np.ndarray,
    lab: dict[str, np.ndarray],
    train_lab: dict[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """``{metric: {"model": v, "<baseline>": v, ...}}`` on one held-out split."""
    ok = correct(mid, out, lab)
    m: dict[str, dict[str, float]] = {}
    if mid == ModelId.WORKLOAD:
        last_mem = rec["current_memory"].astype(np.float64)
        ma_mem = (
            np.concatenate([rec["historical_memory"][:, -3:], last_mem[:, None]], 1)
            .astype(np.float64)
            .mean(1)
        )
        for i, key, cur, hist in [
            (0, "cpu", "current_cpu", "historical_cpu"),
            (2, "gpu", "current_gpu", "historical_gpu"),
        ]:
            ma = np.concatenate([rec[hist][:, -3:], rec[cur][:, None]], 1).mean(1)
            y = lab[f"next_{key}"]
            m[f"{key}_mae"] = {
                "model": _r(np.abs(out[:, i] - y).mean()),
                "last_value": _r(np.abs(rec[cur] - y).mean()),
                "moving_avg4": _r(np.abs(ma - y).mean()),
            }
        y = lab["next_memory"]
        m["memory_mae_mib"] = {
            "model": _r(np.abs(out[:, 1] - y).mean() / 2**20),
            "last_value": _r(np.abs(last_mem - y).mean() / 2**20),
            "moving_avg4": _r(np.abs(ma_mem - y).mean() / 2**20),
        }
    elif mid == ModelId.THREAT:
        y = lab["is_attack"]
        singles = {
            "anomaly_count": rec["anomaly_count"],
            "error_rate": rec["error_rate"],
            "resource_usage": rec["resource_usage"],
            "message_frequency": rec["message_frequency"],
            "max_historical_threat": rec["historical_threats"].max(1),
        }
        best = max(singles, key=lambda k: roc_auc(y, singles[k]))
        m["attack_roc_auc"] = {
            "model": _r(roc_auc(y, out[:, 0])),
            f"threshold({best})": _r(roc_auc(y, singles[best])),
        }
        majority = np.bincount(train_lab["type"]).argmax()
        m["type_macro_f1"] = {
            "model": _r(macro_f1(lab["type"], out[:, 1], 6)),
            "majority": _r(macro_f1(lab["type"], np.full(len(y), majority), 6)),
        }
        amaj = np.bincount(train_lab["action"]).argmax()
        m["action_macro_f1"] = {
            "model": _r(macro_f1(lab["action"], out[:, 3], 5)),
            "majority": _r(macro_f1(lab["action"], np.full(len(y), amaj), 5)),
        }
    elif mid == ModelId.FAILURE:
        base_rate = float(train_lab["label"].mean())
        m["brier"] = {
            "model": _r(brier(lab["label"], out[:, 0])),
            "base_rate": _r(brier(lab["label"], np.full(len(out), base_rate))),
        }
        pos = lab["time_ms"] >= 0
        t_model = np.expm1(raw[pos, 1].astype(np.float64) * TIME_LOG_SCALE)
        median = np.median(train_lab["time_ms"][train_lab["time_ms"] >= 0])
        m["time_mae_min"] = {
            "model": _r(np.abs(t_model - lab["time_ms"][pos]).mean() / 60_000),
            "train_median": _r(np.abs(median - lab["time_ms"][pos]).mean() / 60_000),
        }
        m["type_macro_f1"] = {
            "model": _r(macro_f1(lab["type"], out[:, 3], 6)),
            "majority": _r(macro_f1(lab["type"], np.zeros(len(out)), 6)),
        }
    else:
        y = lab["next_address"].astype(np.float64)
        last_stride = x[:, M_CAND_START].astype(np.float64)  # cur + (cur - previous)
        m["address_accuracy"] = {
            "model": _r((np.abs(out[:, 0] - y) <= ADDR_TOL).mean()),
            "last_stride": _r((np.abs(last_stride - y) <= ADDR_TOL).mean()),
        }
        m["type_accuracy"] = {
            "model": _r((out[:, 2] == lab["next_type"]).mean()),
            "last_type": _r((rec["access_types"][:, -1] == lab["next_type"]).mean()),
        }
    conf = out[:, OUTPUT_NAMES[mid].index("confidence")]
    m["confidence"] = {
        "ece": _r(ece(conf, ok)),
        "accuracy": _r(ok.mean()),
        "mean_confidence": _r(conf.mean()),
    }
    return m
