"""``shmd train [--model NAME|all] [--seed N] [--out DIR] [--rows N]``: train, evaluate, export.

Per model: fit the task heads on the train split, fit the confidence head on the
calibration split (everything else frozen), evaluate on the test split against naive
baselines, then write the next free version ``<out>/<name>/<version>/`` (model.keras,
model.tflite, manifest.json with canaries) and ``<out>/heldout_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from kernel_abi import OUTPUT_NAMES, ModelId

from . import canary
from ._artifacts import KERAS_FILE, TFLITE_FILE, write_manifest
from ._data import split
from ._evaluate import correct, evaluate
from ._post import postprocess
from ._repository import default_models_dir, next_version, version_dir
from ._spec import ENCODER_VERSION, MODEL_IDS, MODEL_NAMES, N_FEATURES, N_RAW_OUTPUTS, RAW_COLUMNS

EPOCHS = {ModelId.WORKLOAD: 40, ModelId.THREAT: 20, ModelId.FAILURE: 20, ModelId.MEMORY: 25}
HEAD_EPOCHS = 25


def _quiet_tf():
    # Two cores shared with other work: one TF thread each way, and no log noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised by an earlier call in this process
    return tf


def _progress(label: str, epochs: int):
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val = f" val {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            print(
                f"\r  {label:<22} epoch {epoch + 1:>2}/{epochs}  loss {logs.get('loss', 0):.4f}{val}"
                f"  {time.perf_counter() - self.t0:5.1f}s",
                end="",
                flush=True,
            )

        def on_train_end(self, logs=None):
            print(flush=True)

    return Progress()


def _raw(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=4096, verbose=0), np.float32)


def post(mid: ModelId, raw: np.ndarray) -> np.ndarray:
    out = np.zeros((raw.shape[0], 4), np.float64)
    postprocess(int(mid), raw, out)
    return out


def train_one(mid: ModelId, seed: int, out_dir: Path, rows: int) -> dict:
    tf = _quiet_tf()
    import keras

    from ._nets import build

    name = MODEL_NAMES[mid]
    t0 = time.perf_counter()
    n_cal, n_test = max(rows // 4, 200), max(rows * 3 // 8, 200)
    _, xtr, ltr = split(mid, seed, "train", rows)
    _, xcal, lcal = split(mid, seed, "cal", n_cal)
    rte, xte, lte = split(mid, seed, "test", n_test)
    net = build(mid, seed)
    net.train.compile(optimizer=keras.optimizers.Adam(2e-3), loss=net.losses)
    epochs = EPOCHS[mid] if rows >= 5000 else 3
    net.train.fit(
        xtr,
        net.targets(xtr, ltr),
        validation_data=(xcal, net.targets(xcal, lcal)),
        epochs=epochs,
        batch_size=256,
        verbose=0,
        callbacks=[_progress(f"{name} task heads", epochs)],
    )

    for layer in net.export.layers:
        layer.trainable = layer.name in ("conf_hidden", "confidence")
    ok_cal = correct(mid, post(mid, _raw(net.export, xcal)), lcal).astype(np.float32)
    head_epochs = HEAD_EPOCHS if rows >= 5000 else 3
    net.head.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    net.head.fit(
        xcal,
        ok_cal,
        epochs=head_epochs,
        batch_size=256,
        verbose=0,
        callbacks=[_progress(f"{name} confidence", head_epochs)],
    )

    raw = _raw(net.export, xte)
    metrics = evaluate(mid, rte, xte, raw, post(mid, raw), lte, ltr)

    version = next_version(out_dir, mid)
    directory = version_dir(out_dir, mid, version)
    directory.mkdir(parents=True)
    net.export.save(directory / KERAS_FILE)
    tflite = tf.lite.TFLiteConverter.from_keras_model(net.export).convert()
    (directory / TFLITE_FILE).write_bytes(tflite)
    parity = _parity(tflite, net.export, xte[:1000])
    seconds = round(time.perf_counter() - t0, 1)
    write_manifest(
        directory,
        {
            "name": name,
            "model_id": int(mid),
            "version": version,
            "encoder_version": ENCODER_VERSION[mid],
            "input": {"name": "features", "dtype": "float32", "shape": [-1, N_FEATURES[mid]]},
            "output": {
                "dtype": "float32",
                "shape": [-1, N_RAW_OUTPUTS[mid]],
                "columns": RAW_COLUMNS[mid],
                "api_outputs": list(OUTPUT_NAMES[mid]),
            },
            "training": {
                "seed": seed,
                "rows": {"train": rows, "cal": n_cal, "test": n_test},
                "epochs": epochs,
                "head_epochs": head_epochs,
                "seconds": seconds,
            },
            "heldout_metrics": metrics,
            "tflite_vs_keras_max_abs_diff": parity,
            "canaries": canary.record(tflite, xte[: canary.N_CANARIES]),
        },
    )
    print(
        f"  {name}: wrote {directory} ({seconds}s, tflite {len(tflite) / 1024:.0f} KiB, parity {parity:.1e})"
    )
    return metrics


def _parity(tflite: bytes, model, x: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite, num_threads=1)
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    it.resize_tensor_input(inp, list(x.shape), strict=True)
    it.allocate_tensors()
    it.set_tensor(inp, x)
    it.invoke()
    return float(np.abs(it.get_tensor(out) - _raw(model, x)).max())


def format_table(all_metrics: dict[str, dict]) -> str:
    lines = [f"{'model':<9} {'metric':<16} {'model':>9}  baselines"]
    for name, metrics in all_metrics.items():
        for metric, vals in metrics.items():
            if metric == "confidence":
                rest = f"accuracy {vals['accuracy']:.3f}  mean conf {vals['mean_confidence']:.3f}"
                lines.append(f"{name:<9} {'confidence ECE':<16} {vals['ece']:>9.4f}  ({rest})")
                continue
            base = "  ".join(f"{k} {v:.4g}" for k, v in vals.items() if k != "model")
            lines.append(f"{name:<9} {metric:<16} {vals['model']:>9.4g}  {base}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shmd train", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all", choices=[*MODEL_IDS, "all"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--out", type=Path, default=default_models_dir(), help="model repository: writes <out>/<model>/<next version>/"
    )
    ap.add_argument(
        "--rows", type=int, default=60_000, help="training rows per model (small for smoke tests)"
    )
    args = ap.parse_args(argv)
    mids = list(MODEL_NAMES) if args.model == "all" else [MODEL_IDS[args.model]]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "heldout_metrics.json"
    all_metrics = json.loads(path.read_text()) if path.is_file() else {}
    t0 = time.perf_counter()
    for mid in mids:
        all_metrics[MODEL_NAMES[mid]] = train_one(mid, args.seed, args.out, args.rows)
        path.write_text(
            json.dumps(all_metrics, indent=2) + "\n"
        )  # after each model: partial runs keep results
    shown = {MODEL_NAMES[m]: all_metrics[MODEL_NAMES[m]] for m in mids}
    print(f"\nheld-out evaluation (seed {args.seed}, {time.perf_counter() - t0:.0f}s total):")
    print(format_table(shown))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
