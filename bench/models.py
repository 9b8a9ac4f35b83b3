"""``python -m bench models [--quick] [--json PATH]``: the four models' runners, per batch size.

For each model, backend and batch (1, 16, 256): microseconds per call (median and p99)
and rows/s, against a numpy forward pass of the same weights measured in the same run.
Backends: ``litert`` and ``tf`` (``predict`` from Python), ``compiled`` (``predict``
from Python) and ``compiled-njit`` (the same ``forward`` timed inside compiled code, as
the daemon's pass calls it: no Python call in the figure). Also per model: encoding 256
payload records, timed inside compiled code, by the encoder the daemon's pass runs
(``encode_rows``: staged rows of the staging buffer's strided view, column-wise log1p)
and by the per-record encoder (its reference, one record at a time). Loops are
bounded by both a call count and a time budget per configuration.

``--int8``: also quantise each shipped Keras model (dynamic range + representative
dataset, ``Optimize.DEFAULT``) and report held-out quality (5,000 test rows, the
manifest's metrics) and LiteRT speed at batch 1 and 256 beside the float model. The
compiled backend runs float32 graphs only, so it has no int8 figure (docs/MODELS.md).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from numba import njit

from models._forward import forward
from ringbuf import _core as core

BATCHES = (1, 16, 256)


@njit(nogil=True, cache=True)
def _forward_ns(bank, mid, x, n, out, scratch, calls, budget_ns, samples):
    """``forward`` timed call by call inside compiled code; how many samples were taken."""
    end = core.monotonic_ns() + budget_ns
    k = 0
    while k < calls and core.monotonic_ns() < end:
        t0 = core.monotonic_ns()
        forward(bank, mid, x, n, out, scratch)
        samples[k] = core.monotonic_ns() - t0
        k += 1
    return k


# Not cached: they take the encoder as an argument, and numba's cache index of a function typed
# on another process's dispatcher (a harness timing its own encoder with these) cannot be written
# back ("underlying object has vanished"): the next run of this benchmark died in _encoding.
@njit(nogil=True)
def _encode_ns(encode, payloads, out, err, calls, budget_ns, samples):
    end = core.monotonic_ns() + budget_ns
    k = 0
    while k < calls and core.monotonic_ns() < end:
        t0 = core.monotonic_ns()
        encode(payloads, out, err)
        samples[k] = core.monotonic_ns() - t0
        k += 1
    return k


@njit(nogil=True)
def _encode_rows_ns(encode, payloads, rows, out, err, scratch, calls, budget_ns, samples):
    end = core.monotonic_ns() + budget_ns
    k = 0
    while k < calls and core.monotonic_ns() < end:
        t0 = core.monotonic_ns()
        encode(payloads, rows, rows.shape[0], out, err, scratch)
        samples[k] = core.monotonic_ns() - t0
        k += 1
    return k


def _encoding(mid, records: np.ndarray, max_calls: int, budget_s: float) -> list[dict]:
    """µs to encode ``records`` (256): the pass's row encoder over a staging view, and the per-record one."""
    import kernel_abi as ka
    from models import MODEL_NAMES, N_FEATURES
    from models._encode import BATCH_ENCODERS
    from models._encode_rows import ROW_ENCODERS, new_scratch

    n = len(records)
    staging = np.zeros(n, ka.REQUEST)
    view = staging.view(ka.REQUESTS[mid])["payload"]
    view[:] = records
    rows = np.arange(n, dtype=np.int64)
    feats = np.zeros((n, N_FEATURES[mid]), np.float32)
    err = np.zeros(n, np.int32)
    samples = np.zeros(max_calls, np.int64)
    scratch = new_scratch(n)
    out = []
    ROW_ENCODERS[mid](view, rows, n, feats, err, scratch)
    k = _encode_rows_ns(ROW_ENCODERS[mid], view, rows, feats, err, scratch, max_calls, int(budget_s * 1e9), samples)
    name = MODEL_NAMES[mid]
    out.append({"model": name, "encoder": "pass (encode_rows)", "records": n, **_summary_us(samples[:k], n)})
    payloads = np.ascontiguousarray(records)
    BATCH_ENCODERS[mid](payloads, feats, err)
    k = _encode_ns(BATCH_ENCODERS[mid], payloads, feats, err, max_calls, int(budget_s * 1e9), samples)
    out.append({"model": name, "encoder": "per record", "records": n, **_summary_us(samples[:k], n)})
    return out


def _summary_us(samples_ns: np.ndarray, rows: int) -> dict:
    us = samples_ns / 1e3
    med = float(np.median(us))
    return {
        "median_us": round(med, 3),
        "p99_us": round(float(np.percentile(us, 99)), 3),
        "rows_per_s": round(rows / med * 1e6),
        "calls": len(us),
    }


def _numpy_forward(mid):
    """A numpy function computing the shipped Keras graph with its weights (the baseline)."""
    import keras

    from models._artifacts import KERAS_FILE, load_manifest

    _, path = load_manifest(mid, None, KERAS_FILE)
    from models import _layers  # noqa: F401  (registers custom layers)

    model = keras.saving.load_model(path, compile=False)

    def softmax(v):
        e = np.exp(v - v.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    acts = {
        "relu": lambda v: np.maximum(v, 0, dtype=np.float32),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "softmax": softmax,
        "linear": lambda v: v,
    }
    table = {}
    for op in model.operations:
        if isinstance(op, keras.layers.Dense):
            w, b, act = op.kernel.numpy(), op.bias.numpy(), acts[op.activation.__name__]
            table[id(op)] = lambda v, w=w, b=b, act=act: act(v @ w + b)
        elif isinstance(op, keras.layers.Concatenate):
            table[id(op)] = lambda vs, axis=op.axis: np.concatenate(vs, axis=axis)
        elif hasattr(op, "numpy_call"):
            table[id(op)] = op.numpy_call
    return lambda x: model._run_through_graph(x, operation_fn=lambda op: table[id(op)])


def _time(fn, x: np.ndarray, max_calls: int, budget_s: float) -> dict:
    for _ in range(min(20, max_calls)):
        fn(x)
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_calls and time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        fn(x)
        samples.append(time.perf_counter_ns() - t0)
    us = np.array(samples) / 1e3
    med = float(np.median(us))
    return {
        "median_us": round(med, 3),
        "p99_us": round(float(np.percentile(us, 99)), 3),
        "rows_per_s": round(x.shape[0] / med * 1e6),
        "calls": len(samples),
    }


def _lower_is_better(metric: str) -> bool:
    return any(k in metric for k in ("mae", "brier", "ece"))


def _int8_study(mid, max_calls: int, budget: float) -> dict:
    """Float vs int8 (LiteRT) on 5,000 held-out rows: quality per metric, speed, size."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from models import (
        _layers,  # noqa: F401  (registers the custom layers)
        postprocess,
    )
    from models._data import split
    from models._evaluate import evaluate
    from models._repository import latest_version, version_dir

    directory = version_dir(None, mid, latest_version(None, mid))
    rec, x, lab = split(mid, 7, "test", 5000)
    _, x_rep, train_lab = split(mid, 7, "train", 2000)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.saving.load_model(directory / "model.keras", compile=False))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x_rep[i : i + 1]] for i in range(300))
    study = {}
    for tag, content in (("float", (directory / "model.tflite").read_bytes()), ("int8", conv.convert())):
        it = Interpreter(model_content=content, num_threads=1)
        inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        speed = {}
        for batch, xb in ((len(x), x), (1, x[:1]), (256, x[:256])):
            xb = np.ascontiguousarray(xb)
            it.resize_tensor_input(inp, list(xb.shape), strict=True)
            it.allocate_tensors()

            def call(v, it=it, inp=inp, out=out):
                it.set_tensor(inp, v)
                it.invoke()
                return it.get_tensor(out)

            if batch == len(x):
                raw = call(xb).copy()
            else:
                speed[f"batch{batch}_us"] = _time(call, xb, max_calls, budget)["median_us"]
        post = np.zeros((len(x), 4))
        postprocess(int(mid), raw, post)
        metrics = evaluate(mid, rec, x, raw, post, lab, train_lab)
        quality = {k: v["model"] for k, v in metrics.items() if "model" in v}
        quality["ece"] = metrics["confidence"]["ece"]
        study[tag] = {"size_kb": round(len(content) / 1024, 1), "quality": quality, **speed}
    worst = 0.0
    for metric, ref in study["float"]["quality"].items():
        got = study["int8"]["quality"][metric]
        loss = (got - ref) if _lower_is_better(metric) else (ref - got)
        # Task metrics: relative loss. ECE is itself an error near 0: 1% means 0.01 absolute.
        worst = max(worst, loss if metric == "ece" else loss / max(abs(ref), 1e-9))
    study["worst_relative_quality_loss"] = round(worst, 4)
    study["quality_within_1pct"] = worst <= 0.01
    return study


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench models", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls per configuration")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--int8", action="store_true", help="also measure each model quantised (LiteRT)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    from bench._stats import write_json
    from kernel_abi import ModelId
    from models import MODEL_NAMES, N_RAW_OUTPUTS, load_runner, scratch_for
    from models._data import split

    max_calls, budget = (300, 0.3) if args.quick else (5000, 2.0)
    results, baseline, ratios, encoding, parity, int8 = [], [], [], [], [], {}
    print(f"{'model':<9} {'backend':<13} {'batch':>5} {'median us':>10} {'p99 us':>10} {'rows/s':>12} {'x numpy':>8}")

    def row(name: str, backend: str, batch: int, r: dict, speedup: float) -> None:
        print(
            f"{name:<9} {backend:<13} {batch:>5} {r['median_us']:>10.2f} {r['p99_us']:>10.2f} "
            f"{r['rows_per_s']:>12,} {speedup:>8.2f}"
        )

    for mid in ModelId:
        name = MODEL_NAMES[mid]
        rec_all, x_all, _ = split(mid, 7, "test", max(BATCHES))
        numpy_fn = _numpy_forward(mid)
        runners = {b: load_runner(mid, backend=b) for b in ("litert", "compiled", "tf")}
        ref = runners["litert"].predict(x_all)
        parity.append({
            "model": name,
            "numpy_vs_litert_max_abs": float(np.abs(numpy_fn(x_all) - ref).max()),
            "compiled_vs_litert_max_abs": float(np.abs(runners["compiled"].predict(x_all) - ref).max()),
        })  # fmt: skip
        bank = runners["compiled"].bank
        scratch = scratch_for(bank)
        for batch in BATCHES:
            x = np.ascontiguousarray(x_all[:batch])
            base = {"model": name, "backend": "numpy", "batch": batch, **_time(numpy_fn, x, max_calls, budget)}
            baseline.append(base)
            row(name, "numpy", batch, base, 1.0)
            timed = {}
            for backend, runner in runners.items():
                calls = max_calls if backend != "tf" else max_calls // 5
                timed[backend] = _time(runner.predict, x, calls, budget)
            out = np.zeros((batch, N_RAW_OUTPUTS[mid]), np.float32)
            samples = np.zeros(max_calls, np.int64)
            forward(bank, int(mid), x, batch, out, scratch)
            k = _forward_ns(bank, int(mid), x, batch, out, scratch, max_calls, int(budget * 1e9), samples)
            timed["compiled-njit"] = _summary_us(samples[:k], batch)
            for backend, t in timed.items():
                r = {"model": name, "backend": backend, "batch": batch, **t}
                results.append(r)
                speedup = round(base["median_us"] / r["median_us"], 3)
                ratios.append({"model": name, "backend": backend, "batch": batch, "speedup_vs_numpy": speedup})
                row(name, backend, batch, r, speedup)
        for enc in _encoding(mid, rec_all[:256], max_calls, budget):
            encoding.append(enc)
            print(f"{name:<9} encode 256 records, {enc['encoder']}: median {enc['median_us']:.2f} us, "
                  f"p99 {enc['p99_us']:.2f} us")  # fmt: skip
        if args.int8:
            int8[name] = _int8_study(mid, max_calls, budget)
            q = int8[name]
            print(f"{name:<9} int8: worst relative quality loss {q['worst_relative_quality_loss']:.2%}, "
                  f"batch 1 {q['float']['batch1_us']:.2f} -> {q['int8']['batch1_us']:.2f} us, "
                  f"batch 256 {q['float']['batch256_us']:.1f} -> {q['int8']['batch256_us']:.1f} us")  # fmt: skip
        print(f"{name:<9} max abs diff vs litert: numpy {parity[-1]['numpy_vs_litert_max_abs']:.1e}, "
              f"compiled {parity[-1]['compiled_vs_litert_max_abs']:.1e}")  # fmt: skip
    if args.json:
        write_json(args.json, {
            "benchmark": "models",
            "quick": args.quick,
            "results": results,
            "baseline": baseline,
            "ratios": ratios,
            "encoding": encoding,
            "parity": parity,
            "int8": int8,
        })  # fmt: skip
    return 0
