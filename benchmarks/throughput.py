"""Throughput and memory of AgrLearn models, on the backend of this process.

Measures training (`fit`) and inference (`predict`) throughput in samples per
second for, per backbone:

- `plain`: the backbone itself;
- `replicate`: `wrap(backbone, n, width=1.0, inference="replicate",
  repetition=0.0, batch_repetition=1)`;
- `group`: the same with `inference="group"`;
- `limit`: the identical inner network (the wrapped model's own layers between
  `Aggregate` and `Deaggregate`, sharing its weights, then the head's
  softmax on each slot's scores, as the wrapped model applies it to each
  sample's), fed arrays aggregated beforehand with NumPy, so it pays nothing
  for aggregation and computes the same probabilities. Its `fit` and
  group `predict` take `(B / n, ..., n * C)` arrays, its replicate `predict`
  the `(B, ..., n * C)` tiled arrays; a limit row carries n samples in `fit`
  and group `predict`, one in replicate `predict`.

Training does not depend on `inference`, so `fit` is timed for the replicate
model only. Every timing is one `fit` epoch or one `predict` call over the
same samples; after warm-up calls (which compile), the variants run in a
random order in each repeat, and the median over repeats is reported, so
drifting load on a shared machine hits all variants alike.

Memory is measured on `Aggregate` alone, for a large batch: the growth of the
process's peak resident set (Linux `VmHWM`, reset before each call through
`/proc/self/clear_refs`) while the layer runs the way `predict` runs it
(compiled with `jax.jit` or `tf.function`, eager on PyTorch), next to the
analytic size of the aggregated tensor. On JAX the compiled program's own
memory analysis (output and temporary bytes) is reported as well, and on a
PyTorch GPU the growth of the CUDA allocator's peak.

With `--device-input`, every `predict` is timed on batches converted to
backend tensors (on the GPU, when there is one) before timing and run through
`predict_on_batch`, so that copying the input from host memory, the same for
every variant, does not decide the comparison.

The backend is fixed per process: run it once per backend,
`KERAS_BACKEND=jax python benchmarks/throughput.py --out jax.json`, or use
`benchmarks/run_all.py`, which runs all three and writes the tables and plot.
`--records runs.jsonl` also appends the report as one JSON line keyed by the
backend and the arguments, and skips the run when that key is already there
(for time-limited machines: rerunning continues where the records stop);
`--tables runs.jsonl` prints Markdown tables of such records.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import keras_agrlearn  # noqa: E402
from experiments import backbones  # noqa: E402
from experiments.study import load_records  # noqa: E402
from keras_agrlearn import Aggregate  # noqa: E402
from keras_agrlearn import Deaggregate  # noqa: E402
from keras_agrlearn import _keras_internals  # noqa: E402

CLASSES = 10

# Environment variables that cap the backends' thread pools (set by run_all.py).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "XLA_FLAGS",
)


# Backbones ------------------------------------------------------------------

small_cnn = backbones.small_cnn


def resnet(shape, classes=CLASSES, filters=(16, 32, 64), blocks=1):
    """A CIFAR-style ResNet: a stem, then `blocks` basic blocks per stage."""
    return backbones.small_resnet(shape, filters, classes, blocks=blocks)


# The limit: the wrapped model without Aggregate and Deaggregate -------------


class SlotSoftmax(keras.layers.Layer):
    """Softmax over each slot's `classes` scores of `(G, n * classes)` inputs."""

    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes

    def call(self, scores):
        probabilities = ops.softmax(ops.reshape(scores, (-1, self.classes)), axis=-1)
        return ops.reshape(probabilities, (-1, scores.shape[-1]))


def inner_network(wrapped):
    """The wrapped model's layers from `Aggregate` to `Deaggregate`, weights shared.

    Takes aggregated inputs `(G, ..., n * C)` and returns `(G, n * K)`
    probabilities: the head's scores with the softmax applied per slot.
    """
    (aggregate,) = [layer for layer in wrapped.layers if isinstance(layer, Aggregate)]
    inputs = keras.Input(aggregate.output.shape[1:], name="aggregated")
    scores = []

    def call_fn(layer, *args, **kwargs):
        if isinstance(layer, Aggregate):
            return inputs
        if isinstance(layer, Deaggregate):
            scores.append(args[0])
        if scores:
            # Layers after Deaggregate (the per-sample activation) are
            # replaced by SlotSoftmax below.
            return scores[0]
        return layer(*args, **kwargs)

    sample = keras.Input(wrapped.inputs[0].shape[1:])
    _keras_internals.run_graph(wrapped, sample, call_fn)
    probabilities = SlotSoftmax(wrapped.outputs[0].shape[-1])(scores[0])
    return keras.Model(inputs, probabilities, name=f"limit_{wrapped.name}")


def grouped_loss(classes):
    """The wrapped model's loss on `(G, n * K)` scores and `(G, n)` labels."""

    def loss(y_true, y_pred):
        probabilities = ops.reshape(y_pred, (-1, classes))
        labels = ops.reshape(y_true, (-1,))
        return keras.losses.sparse_categorical_crossentropy(labels, probabilities)

    return loss


def aggregate_numpy(x, n, replicate):
    """NumPy's version of the Aggregate layout, computed before timing."""
    if replicate:
        return np.ascontiguousarray(np.tile(x, (1,) * (x.ndim - 1) + (n,)))
    groups = x.reshape((-1, n) + x.shape[1:])
    return np.ascontiguousarray(np.moveaxis(groups, 1, -2)).reshape(
        groups.shape[:1] + x.shape[1:-1] + (n * x.shape[-1],)
    )


# Timing -----------------------------------------------------------------------


def build_tasks(args, x, y):
    """Timed callables, keyed by (backbone, variant, n, phase)."""
    tasks = {}
    jit = {}

    def compiled(model, loss="sparse_categorical_crossentropy"):
        model.compile(optimizer="adam", loss=loss, jit_compile=args.jit_compile)
        return model

    def fit_task(model, inputs, labels, batch_size):
        return lambda: model.fit(
            inputs, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False
        )

    def predict_task(model, inputs, batch_size):
        if args.device_input:
            batches = [
                ops.convert_to_tensor(inputs[start : start + batch_size])
                for start in range(0, len(inputs), batch_size)
            ]
            return lambda: [model.predict_on_batch(batch) for batch in batches]
        return lambda: model.predict(inputs, batch_size=batch_size, verbose=0)

    for name in args.backbones:
        if name == "resnet":
            backbone = compiled(resnet(x.shape[1:], blocks=args.resnet_blocks))
        else:
            backbone = compiled(small_cnn(x.shape[1:]))
        jit[name] = backbone.jit_compile
        tasks[name, "plain", 1, "fit"] = fit_task(backbone, x, y, args.batch)
        tasks[name, "plain", 1, "predict"] = predict_task(backbone, x, args.predict_batch)
        for n in args.ns:
            # No input repetition: it changes the work done, not what aggregation costs.
            replicate = compiled(
                keras_agrlearn.wrap(
                    backbone,
                    n,
                    width=1.0,
                    inference="replicate",
                    repetition=0.0,
                    batch_repetition=1,
                )
            )
            group = compiled(
                keras_agrlearn.wrap(
                    backbone,
                    n,
                    width=1.0,
                    inference="group",
                    repetition=0.0,
                    batch_repetition=1,
                )
            )
            limit = compiled(inner_network(replicate), loss=grouped_loss(CLASSES))
            x_group = aggregate_numpy(x, n, replicate=False)
            x_replicate = aggregate_numpy(x, n, replicate=True)
            y_group = y.reshape(-1, n)
            tasks[name, "replicate", n, "fit"] = fit_task(replicate, x, y, args.batch)
            tasks[name, "limit", n, "fit"] = fit_task(limit, x_group, y_group, args.batch // n)
            tasks[name, "replicate", n, "predict"] = predict_task(replicate, x, args.predict_batch)
            tasks[name, "group", n, "predict"] = predict_task(group, x, args.predict_batch)
            tasks[name, "limit-replicate", n, "predict"] = predict_task(
                limit, x_replicate, args.predict_batch
            )
            tasks[name, "limit-group", n, "predict"] = predict_task(
                limit, x_group, args.predict_batch // n
            )
    return tasks, jit


def measure(tasks, repeats, warmup, seed):
    """Wall and CPU seconds per task, interleaved in a new order each repeat.

    The CPU seconds are this process's (all its threads): on a machine shared
    with other work they count what the task computed, not the time it waited
    for a core, so their ratios stay meaningful when wall times do not.
    """
    for task in tasks.values():
        for _ in range(warmup):
            task()
    wall = {key: [] for key in tasks}
    cpu = {key: [] for key in tasks}
    keys = list(tasks)
    order = np.random.default_rng(seed)
    for _ in range(repeats):
        for index in order.permutation(len(keys)):
            key = keys[index]
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            tasks[key]()
            cpu[key].append(time.process_time() - start_cpu)
            wall[key].append(time.perf_counter() - start_wall)
    return wall, cpu


# Memory -----------------------------------------------------------------------


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _compiled_call(layer):
    """The layer's inference call on tensor arguments, compiled as `predict` compiles it."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(lambda *tensors: layer(*tensors, training=False))
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda *tensors: layer(*tensors, training=False))
    import torch

    def call(*tensors):
        with torch.no_grad():
            return layer(*tensors, training=False)

    return call


def _torch_cuda():
    """The `torch.cuda` module when PyTorch runs this process on a GPU, else None."""
    if keras.backend.backend() != "torch":
        return None
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _peak_growth_mib(fn, inputs):
    """Peak growth while `fn(inputs)` runs and its result lives.

    Returns the resident set's growth and, on a PyTorch GPU, the CUDA
    allocator's (None elsewhere), in MiB.
    """
    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.synchronize()
        cuda.reset_peak_memory_stats()
        device_before = cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    before = _status_kib("VmRSS")
    outputs = fn(inputs)
    ops.convert_to_numpy(ops.sum(outputs))  # waits for asynchronous backends
    peak = _status_kib("VmHWM")
    device = None
    if cuda is not None:
        device = (cuda.max_memory_allocated() - device_before) / 2**20
    del outputs
    return (peak - before) / 1024, device


def measure_memory(args):
    shape = (args.memory_batch,) + tuple(args.image_shape)
    rng = np.random.default_rng(0)
    inputs = ops.convert_to_tensor(rng.random(shape, dtype=np.float32))
    small = ops.convert_to_tensor(rng.random((args.ns[-1] * 2,) + shape[1:], dtype=np.float32))
    input_mib = np.prod(shape) * 4 / 2**20
    rows = []
    for inference in ("group", "replicate"):
        for n in args.ns:
            layer = Aggregate(n, inference=inference, repetition=0.0, batch_repetition=1)
            fn = _compiled_call(layer)
            fn(small)  # builds the layer outside the measured region
            if keras.backend.backend() == "jax":
                fn = compiled = fn.lower(inputs).compile()
            else:
                fn(inputs)  # traces for this shape outside the measured region
            growth, device_growth = _peak_growth_mib(fn, inputs)
            output_mib = input_mib * (n if inference == "replicate" else 1)
            row = {
                "inference": inference,
                "n": n,
                "input_mib": input_mib,
                "aggregated_mib": output_mib,
                "peak_growth_mib": growth,
            }
            if device_growth is not None:
                row["cuda_peak_growth_mib"] = device_growth
            if keras.backend.backend() == "jax":
                analysis = compiled.memory_analysis()
                row["xla_output_mib"] = analysis.output_size_in_bytes / 2**20
                row["xla_temp_mib"] = analysis.temp_size_in_bytes / 2**20
            rows.append(row)
    return rows


# Main ---------------------------------------------------------------------------


def versions():
    found = {"python": platform.python_version(), "keras": keras.__version__}
    for module in ("numpy", "jax", "jaxlib", "tensorflow", "torch"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            continue
    return found


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    found = {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()}
    accelerator = _accelerator()
    if accelerator:
        found["accelerator"] = accelerator
    return found


def _accelerator():
    """The name of the GPU the backend computes on, or None on a CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else device.device_kind
    if backend == "torch":
        cuda = _torch_cuda()
        return cuda.get_device_name() if cuda is not None else None
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--backbones", default="cnn,resnet", type=lambda t: t.split(","))
    parser.add_argument("--resnet-blocks", type=int, default=1, help="basic blocks per stage")
    parser.add_argument("--ns", default="2,3,4", type=ints, help="group sizes n")
    parser.add_argument("--image-shape", default="32,32,3", type=ints)
    parser.add_argument("--samples", type=int, default=768, help="samples per timed call")
    parser.add_argument("--batch", type=int, default=96, help="fit batch size")
    parser.add_argument("--predict-batch", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-batch", type=int, default=4096)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--jit-compile", default="auto", type=lambda t: t if t == "auto" else t == "true"
    )
    parser.add_argument(
        "--dtype-policy", default=None, help='e.g. "mixed_float16"; default: Keras\'s global policy'
    )
    parser.add_argument(
        "--device-input",
        action="store_true",
        help="time predict on batches already converted to backend (device) tensors",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results path")
    parser.add_argument(
        "--records",
        default=None,
        help="JSON-lines file: append the report; skip the run if its key is there",
    )
    parser.add_argument(
        "--tables",
        default=None,
        metavar="RECORDS",
        help="print Markdown tables of a --records file and exit",
    )
    args = parser.parse_args(argv)
    if not (args.out or args.records or args.tables):
        parser.error("one of --out, --records or --tables is required")
    for n in args.ns:
        for size in (args.batch, args.predict_batch, args.samples):
            if size % n:
                parser.error(f"sizes must be multiples of every n; {size} % {n} != 0")
    if args.samples % args.batch or args.samples % args.predict_batch:
        parser.error("--samples must be a multiple of --batch and --predict-batch")
    return args


# Records of time-limited runs ------------------------------------------------

# The GPU goals (docs/GPU.md): wrapped / limit at most this in every cell,
# and group throughput at n=3 at least this times n x the plain backbone's.
LIMIT_TARGET = 1.05
GROUP_TARGET = 0.8
GROUP_N = 3


def record_key(args):
    """The backend and every argument that changes what is measured."""
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "records", "tables")}
    return f"{keras.backend.backend()}|{json.dumps(settings, sort_keys=True)}"


def goals_table(records):
    """The GPU goals per record and backbone, worst case over n."""
    import run_all

    lines = [
        f"| backend | dtype policy | input | backbone | fit wrapped / limit (<= {LIMIT_TARGET}) "
        f"| predict wrapped / limit (<= {LIMIT_TARGET}) "
        f"| group / (n x plain) at n={GROUP_N} (>= {GROUP_TARGET}) | goals met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in records:
        t = {
            (r["backbone"], r["variant"], r["n"], r["phase"]): r["median_s"]
            for r in report["results"]
        }
        ns = report["args"]["ns"]
        for b in report["args"]["backbones"]:
            fit, predict = run_all.worst_limit_ratios(t, b, ns)
            group = None
            if GROUP_N in ns:
                group = t[b, "plain", 1, "predict"] / t[b, "group", GROUP_N, "predict"] / GROUP_N
            met = (
                fit <= LIMIT_TARGET
                and predict <= LIMIT_TARGET
                and (group is not None and group >= GROUP_TARGET)
            )
            lines.append(
                f"| {report['backend']} | {report['args']['dtype_policy'] or 'float32'} "
                f"| {'on device' if report['args'].get('device_input') else 'from host'} "
                f"| {b} | {fit:.3f} | {predict:.3f} "
                f"| {'not measured' if group is None else f'{group:.2f}'} "
                f"| {'yes' if met else 'no'} |"
            )
    return "\n".join(lines)


def records_tables(path):
    """Markdown: the goals, then each record's tables, with machine and versions."""
    import run_all

    records = list(load_records(path).values())
    parts = ["### Goals, worst case over n\n", goals_table(records) + "\n"]
    for report in records:
        args = report["args"]
        where = report["machine"].get("accelerator") or report["machine"]["cpu"]
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        parts.append(
            f"### {report['backend']} on {where}, {args['dtype_policy'] or 'float32'}, "
            f"input {'on device' if args.get('device_input') else 'from host'}\n"
        )
        parts.append(
            f"{report.get('date', 'undated')}; {versions}; jit_compile: {report['jit_compile']}; "
            f"{args['samples']} samples per call, medians of wall seconds over "
            f"{args['repeats']} repeats; measuring took {report['measure_s']:.0f} s.\n"
        )
        clock, run_all.CLOCK = run_all.CLOCK, "wall"
        try:
            for backbone in args["backbones"]:
                parts.append(
                    f"**{backbone}** (repeat-to-repeat spread: median "
                    f"{run_all.spread(report, backbone):.1%} from the median)\n"
                )
                parts.append(run_all.throughput_table(report, backbone) + "\n")
        finally:
            run_all.CLOCK = clock
    return "\n".join(parts)


def main(argv=None):
    args = parse_args(argv)
    if args.tables:
        text = records_tables(args.tables)
        print(text)
        return text
    key = record_key(args)
    if args.records and key in load_records(args.records):
        print(f"already recorded in {args.records}: {key}")
        return None
    if keras.backend.backend() == "torch" and os.environ.get("OMP_NUM_THREADS"):
        import torch

        # PyTorch's inter-op pool ignores OMP_NUM_THREADS.
        torch.set_num_interop_threads(int(os.environ["OMP_NUM_THREADS"]))
    keras.utils.set_random_seed(args.seed)
    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    memory = [] if args.no_memory else measure_memory(args)
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.samples,) + tuple(args.image_shape), dtype=np.float32)
    y = rng.integers(0, CLASSES, args.samples).astype("int32")
    tasks, jit = build_tasks(args, x, y)
    start = time.perf_counter()
    wall, cpu = measure(tasks, args.repeats, args.warmup, args.seed)
    results = []
    for (backbone, variant, n, phase), seconds in wall.items():
        cpu_seconds = cpu[backbone, variant, n, phase]
        results.append(
            {
                "backbone": backbone,
                "variant": variant,
                "n": n,
                "phase": phase,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "median_s": statistics.median(seconds),
                "median_cpu_s": statistics.median(cpu_seconds),
                "samples_per_s": args.samples / statistics.median(seconds),
            }
        )
    report = {
        "backend": keras.backend.backend(),
        "jit_compile": jit,
        "versions": versions(),
        "machine": machine(),
        "threads": {k: os.environ.get(k) for k in THREAD_VARIABLES},
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "command": " ".join([f"KERAS_BACKEND={keras.backend.backend()}", "python"] + sys.argv),
        "measure_s": time.perf_counter() - start,
        "results": results,
        "memory": memory,
        "date": datetime.date.today().isoformat(),
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as out:
            json.dump(report, out, indent=1)
    if args.records:
        os.makedirs(os.path.dirname(os.path.abspath(args.records)), exist_ok=True)
        with open(args.records, "a") as records:
            records.write(json.dumps(dict(report, key=key)) + "\n")
    return report


if __name__ == "__main__":
    main()
