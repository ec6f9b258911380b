"""Where inference time goes outside the network: input feeding and dispatch.

Three profiles behind the explanations in docs/BENCHMARKS.md, on the backend
of this process:

1. **Input feeding.** For the plain ResNet (or `--backbone cnn`) and its
   group-inference wrap (n=4), the CPU seconds of `model.predict` on NumPy arrays against the same
   network called directly on a batch already converted to the backend's
   tensor type (compiled: `tf.function`, `jax.jit`; PyTorch eager under
   `torch.no_grad`). The difference per sample is what `predict` spends
   feeding and collecting data, which no network change can remove.
2. **Aggregation's share of a training step.** `Aggregate` and `Deaggregate`
   timed alone on one training batch, against one `fit` step of the limit:
   a cost too small for end-to-end ratios to resolve, measured directly.
3. **Operator dispatch (PyTorch).** `torch.profiler` counts the operators one
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
    group = keras_agrlearn.wrap(
        backbone, args.n, inference="group", repetition=0.0, batch_repetition=1
    )
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


def aggregation_share(args, x):
    """CPU seconds of `Aggregate` and `Deaggregate` alone against a fit step.

    End-to-end ratios (wrapped / limit) carry the machine's repeat noise; this
    times the two layers on their own, compiled as `predict` compiles them,
    on one training batch (`--batch` samples, group layout, then the head's
    `(G, n * K)` scores back to `(B, K)`), many times, and divides by the
    CPU seconds of one `fit` step of the limit. Their backward pass is the
    same reshapes and transposes again, so twice the share bounds what
    aggregation adds to a training step.
    """
    from keras_agrlearn import Aggregate
    from keras_agrlearn import Deaggregate

    rows = []
    batch = x[: args.batch]
    for name in ("cnn", "resnet"):
        make = throughput.resnet if name == "resnet" else throughput.small_cnn
        wrapped = keras_agrlearn.wrap(make(x.shape[1:]), args.n, repetition=0.0, batch_repetition=1)
        limit = throughput.inner_network(wrapped)
        limit.compile(optimizer="adam", loss=throughput.grouped_loss(throughput.CLASSES))
        aggregated = throughput.aggregate_numpy(batch, args.n, replicate=False)
        labels = np.zeros((len(batch) // args.n, args.n), "int32")

        def fit_step():
            limit.fit(aggregated, labels, batch_size=len(aggregated), epochs=1, verbose=0)

        aggregate = Aggregate(args.n, inference="group", repetition=0.0, batch_repetition=1)
        # Group inference without a reference is refused (it could not drop
        # the padding of a partial group); here the batch is whole groups.
        deaggregate = Deaggregate(args.n, inference="group")
        scores = keras.ops.convert_to_tensor(
            np.zeros((len(batch) // args.n, args.n * throughput.CLASSES), "float32")
        )
        layers_fn = throughput._compiled_call(aggregate)
        head_fn = throughput._compiled_call(deaggregate)
        tensor = keras.ops.convert_to_tensor(batch)

        def layers_call():
            for _ in range(args.calls):
                out = layers_fn(tensor)
                back = head_fn(scores, tensor)
            keras.ops.convert_to_numpy(keras.ops.sum(out) + keras.ops.sum(back))

        step = cpu_seconds(fit_step, args.repeats)
        layers = cpu_seconds(layers_call, args.repeats) / args.calls
        rows.append(
            {
                "backbone": name,
                "fit_step_ms": 1e3 * step,
                "aggregate_and_deaggregate_ms": 1e3 * layers,
                "share": layers / step,
            }
        )
    return rows


def torch_operators(args, x):
    """Operators per group `predict` batch: wrapped model against the limit."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    backbone = throughput.small_cnn(x.shape[1:])
    wrapped = keras_agrlearn.wrap(
        backbone, args.n, inference="group", repetition=0.0, batch_repetition=1
    )
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
                "top": sorted(((e.key, int(e.count)) for e in events), key=lambda kv: -kv[1])[:12],
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--backbone", choices=("resnet", "cnn"), default="resnet")
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=96, help="fit batch of the share")
    parser.add_argument("--calls", type=int, default=200, help="layer calls per timing")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((args.samples, 32, 32, 3), dtype=np.float32)
    report = {
        "backend": keras.backend.backend(),
        "args": vars(args),
        "versions": throughput.versions(),
        "feeding": feeding(args, x),
        "aggregation_share": aggregation_share(args, x),
    }
    if keras.backend.backend() == "torch":
        report["operators"] = torch_operators(args, x[: args.samples // 4])
    with open(args.out, "w") as out:
        json.dump(report, out, indent=1)
    for row in report["feeding"]:
        print(row)
    for row in report["aggregation_share"]:
        print(row)
    for row in report.get("operators", []):
        print(row["model"], row["aten_calls"], row["top"][:6])
    return report


if __name__ == "__main__":
    main()
