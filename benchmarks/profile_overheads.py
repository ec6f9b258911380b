"""Where inference time goes outside the network: input feeding and dispatch.

Two profiles behind the explanations in docs/BENCHMARKS.md, on the backend of
this process:

1. **Input feeding.** For the plain ResNet (or `--backbone cnn`) and its
   group-inference wrap (n=4), the CPU seconds of `model.predict` on NumPy arrays against the same
   network called directly on a batch already converted to the backend's
   tensor type (compiled: `tf.function`, `jax.jit`; PyTorch eager under
   `torch.no_grad`). The difference per sample is what `predict` spends
   feeding and collecting data, which no network change can remove.
2. **Operator dispatch (PyTorch).** `torch.profiler` counts the operators one
   group `predict` batch runs, for the wrapped model and for the limit (the
   same network fed pre-aggregated arrays): the extra operators are
   `Aggregate`'s and `Deaggregate`'s reshapes and the per-sample activation,
   each dispatched on its own in eager mode.

    KERAS_BACKEND=tensorflow python benchmarks/profile_overheads.py --out tf.json
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402

import keras_agrlearn  # noqa: E402


def direct_call(model):
    """`model(x, training=False)` compiled the way the backend compiles steps."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False))
    if backend == "jax":
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

        @jax.jit
        def call(state, x):
            outputs, _ = model.stateless_call(*state, x, training=False)
            return outputs

        return lambda x: call(state, x)
    import torch

    def call(x):
        with torch.no_grad():
            return model(x, training=False)

    return call


def cpu_seconds(fn, repeats):
    fn()  # warm-up: compiles
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def feeding(args, x):
    """CPU seconds per sample: `predict` on NumPy vs a direct call on tensors."""
    rows = []
    make = throughput.resnet if args.backbone == "resnet" else throughput.small_cnn
    backbone = make(x.shape[1:])
    group = keras_agrlearn.wrap(backbone, args.n, inference="group", repetition=0.0)
    for name, model in (("plain", backbone), (f"group n={args.n}", group)):
        tensor = keras.ops.convert_to_tensor(x)
        call = direct_call(model)

        def run_direct():
            keras.ops.convert_to_numpy(call(tensor))

        def run_predict():
            model.predict(x, batch_size=len(x), verbose=0)

        direct = cpu_seconds(run_direct, args.repeats) / len(x)
        predict = cpu_seconds(run_predict, args.repeats) / len(x)
        rows.append(
            {
                "model": name,
                "predict_ms_per_sample": 1e3 * predict,
                "direct_ms_per_sample": 1e3 * direct,
                "feeding_ms_per_sample": 1e3 * (predict - direct),
            }
        )
    return rows


def torch_operators(args, x):
    """Operators per group `predict` batch: wrapped model against the limit."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    backbone = throughput.small_cnn(x.shape[1:])
    wrapped = keras_agrlearn.wrap(backbone, args.n, inference="group", repetition=0.0)
    limit = throughput.inner_network(wrapped)
    aggregated = throughput.aggregate_numpy(x, args.n, replicate=False)
    rows = []
    for name, model, inputs in (("wrapped", wrapped, x), ("limit", limit, aggregated)):
        tensor = keras.ops.convert_to_tensor(inputs)
        with torch.no_grad():
            model(tensor, training=False)  # builds and warms up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(tensor, training=False)
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        rows.append(
            {
                "model": name,
                "aten_calls": int(sum(e.count for e in events)),
                "top": sorted(
                    ((e.key, int(e.count)) for e in events), key=lambda kv: -kv[1]
                )[:12],
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--backbone", choices=("resnet", "cnn"), default="resnet")
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((args.samples, 32, 32, 3), dtype=np.float32)
    report = {
        "backend": keras.backend.backend(),
        "args": vars(args),
        "versions": throughput.versions(),
        "feeding": feeding(args, x),
    }
    if keras.backend.backend() == "torch":
        report["operators"] = torch_operators(args, x[: args.samples // 4])
    with open(args.out, "w") as out:
        json.dump(report, out, indent=1)
    for row in report["feeding"]:
        print(row)
    for row in report.get("operators", []):
        print(row["model"], row["aten_calls"], row["top"][:6])
    return report


if __name__ == "__main__":
    main()
