"""``python -m bench models [--quick] [--json PATH]``: the four models' runners, per batch size.

For each model, backend (litert, tf) and batch (1, 16, 256): microseconds per
``predict`` call (median and p99) and rows/s, against a numpy forward pass of the
same weights measured in the same run. Loops are bounded by both a call count and a
time budget per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 16, 256)


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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench models", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls per configuration")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    from kernel_abi import ModelId
    from models import MODEL_NAMES, load_runner
    from models._data import split

    max_calls, budget = (300, 0.3) if args.quick else (5000, 2.0)
    results, baseline, ratios = [], [], []
    print(
        f"{'model':<9} {'backend':<7} {'batch':>5} {'median us':>10} {'p99 us':>10} "
        f"{'rows/s':>12} {'x numpy':>8}"
    )
    for mid in ModelId:
        name = MODEL_NAMES[mid]
        x_all = split(mid, 7, "test", max(BATCHES))[1]
        numpy_fn = _numpy_forward(mid)
        runners = {"litert": load_runner(mid), "tf": load_runner(mid, backend="tf")}
        agree = float(np.abs(numpy_fn(x_all) - runners["litert"].predict(x_all)).max())
        for batch in BATCHES:
            x = np.ascontiguousarray(x_all[:batch])
            base = {
                "model": name,
                "backend": "numpy",
                "batch": batch,
                **_time(numpy_fn, x, max_calls, budget),
            }
            baseline.append(base)
            print(
                f"{name:<9} {'numpy':<7} {batch:>5} {base['median_us']:>10.2f} {base['p99_us']:>10.2f} "
                f"{base['rows_per_s']:>12,} {1.0:>8.2f}"
            )
            for backend, runner in runners.items():
                calls = max_calls if backend == "litert" else max_calls // 5
                r = {
                    "model": name,
                    "backend": backend,
                    "batch": batch,
                    **_time(runner.predict, x, calls, budget),
                }
                results.append(r)
                speedup = round(base["median_us"] / r["median_us"], 3)
                ratios.append(
                    {"model": name, "backend": backend, "batch": batch, "speedup_vs_numpy": speedup}
                )
                print(
                    f"{name:<9} {backend:<7} {batch:>5} {r['median_us']:>10.2f} {r['p99_us']:>10.2f} "
                    f"{r['rows_per_s']:>12,} {speedup:>8.2f}"
                )
        print(f"{name:<9} numpy vs litert max abs diff {agree:.1e}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "models",
                    "quick": args.quick,
                    "results": results,
                    "baseline": baseline,
                    "ratios": ratios,
                },
                indent=2,
            )
            + "\n"
        )
    return 0
