"""Cost of batch repetition: training step time and memory, on this process's backend.

A training step with batch repetition b groups every batch b times, so the
network sees b times as many groups; the target is a step that costs at most
1.05 x b x the step without it (the aggregation itself adds almost nothing),
and memory for one aggregated tensor of the repeated batch.

- Step time: one `fit` epoch over the same samples for `wrap(backbone, n,
  repetition=0, batch_repetition=b)` with b in `--bs`, both objectives
  ("mean" and "slots"), after warm-up; variants run interleaved in a new
  order each repeat, medians of wall and CPU seconds are reported, and
  `ratio = step(b) / (b * step(1))`. A network's step time per group also
  grows with its batch (caches), so each b > 1 is also compared with the
  b = 1 model making the same groups from b-times larger batches of the
  data tiled b times: that ratio is what batch repetition itself costs. The
  plain backbone fed the data tiled b times in b-times larger batches, over
  b x its own step, shows how the backend's step time grows with the batch
  for a network without any aggregation.
- Memory: `Aggregate(n, repetition=0, batch_repetition=b)` alone in training mode, compiled
  as `fit` compiles it (eager on PyTorch), on a large batch: the growth of the
  process's peak resident set next to the analytic size of the aggregated
  tensor of the repeated batch (b x the input for a batch that is a multiple
  of n). The same measurement for b = 1 with `shuffle=True` (one permuted
  grouping) shows what the permuted layout costs without repetition.

    KERAS_BACKEND=jax python benchmarks/batch_repetition.py --out jax.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402

import keras_agrlearn  # noqa: E402
from keras_agrlearn import Aggregate  # noqa: E402


def step_tasks(args, x, y):
    """Timed `fit` epochs, keyed by (backbone, objective, b, reference).

    `reference` is False for the model with batch repetition b. The
    reference task (True, b > 1) makes the same network work another way: the
    b = 1 model fed the data tiled b times in b-times larger batches, so both
    run b x the groups per step; their ratio is what batch repetition itself
    costs, apart from how the network's step time grows with its batch.
    """
    tasks = {}
    for name in args.backbones:
        make = throughput.resnet if name == "resnet" else throughput.small_cnn
        backbone = make(x.shape[1:])
        plain = make(x.shape[1:])
        plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        for b in args.bs:
            tasks[name, "plain", b, False] = (
                lambda b=b, tx=np.concatenate([x] * b), ty=np.concatenate([y] * b): plain.fit(
                    tx, ty, batch_size=args.batch * b, epochs=1, verbose=0, shuffle=False
                )
            )
        for objective in ("mean", "slots"):
            models = {}
            for b in args.bs:
                model = keras_agrlearn.wrap(
                    backbone, args.n, repetition=0.0, batch_repetition=b, objective=objective
                )
                model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
                models[b] = model
                tasks[name, objective, b, False] = lambda model=model: model.fit(
                    x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False
                )
            for b in args.bs:
                if b == 1:
                    continue
                tiled_x, tiled_y = np.concatenate([x] * b), np.concatenate([y] * b)
                tasks[name, objective, b, True] = (
                    lambda model=models[1], tx=tiled_x, ty=tiled_y, b=b: model.fit(
                        tx, ty, batch_size=args.batch * b, epochs=1, verbose=0, shuffle=False
                    )
                )
    return tasks


def training_call(layer, inputs, jit_compile=False):
    """The layer's training call, compiled the way `fit` compiles it.

    Permuted layouts are returned with their readout, as `Deaggregate` needs
    it; only the aggregated tensor is kept.

    On JAX the random permutations' seed state goes in as an argument, as in
    `fit`'s stateless train step. The call is compiled (JAX) or traced
    (TensorFlow) for `inputs` without running, since a run beforehand would
    leave its buffers in the allocator's pool and hide the growth.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        state = layer.seed_generator.state

        def call(t, seed_state):
            with keras.StatelessScope(state_mapping=[(state, seed_state)]):
                return layer(t, training=True, return_readout=True)[0]

        compiled = jax.jit(call).lower(inputs, state.value).compile()
        return lambda t: compiled(t, state.value)
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(
            lambda t: layer(t, training=True, return_readout=True)[0], jit_compile=jit_compile
        )
        # Traced without running, so no buffer of this size is pooled yet.
        fn.get_concrete_function(tf.TensorSpec(inputs.shape, inputs.dtype))
        return fn
    return lambda t: layer(t, training=True, return_readout=True)[0]


def memory_row(args, b):
    """Peak growth of one `Aggregate(n, repetition=0.0, batch_repetition=b)` training call."""
    shape = (args.memory_batch,) + tuple(args.image_shape)
    rng = np.random.default_rng(0)
    inputs = ops.convert_to_tensor(rng.random(shape, dtype=np.float32))
    small = ops.convert_to_tensor(rng.random((args.n * 2,) + shape[1:], dtype=np.float32))
    input_mib = float(np.prod(shape) * 4 / 2**20)
    layer = Aggregate(
        args.n, inference="group", repetition=0.0, batch_repetition=b, shuffle=b == 1, seed=0
    )
    layer(small)  # builds the layer outside the measured region
    call = training_call(layer, inputs, jit_compile=args.memory_jit_compile)
    growth, _ = throughput._peak_growth_mib(call, inputs)
    return {
        "batch_repetition": b,
        "input_mib": input_mib,
        "aggregated_mib": b * input_mib,
        "peak_growth_mib": growth,
        "peak_over_aggregated": growth / (b * input_mib),
    }


def memory_rows(args, argv):
    """One fresh process per b: allocator pools of earlier calls hide growth."""
    rows = []
    for b in [1] + [b for b in args.bs if b > 1]:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--memory-one", str(b)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def tables(directory):
    """Markdown tables of every `BACKEND.json` (and `BACKEND-memory.json`) in `directory`."""
    lines = [
        "| backend | backbone | objective | b | step s (wall, median) | step(b) / (b x "
        "step(1)), CPU time | same, wall | step(b) / same groups from a b x batch, CPU time | "
        "plain backbone: step on a b x batch / (b x step), CPU time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    memory = [
        "| backend | b | aggregated tensor MiB | peak growth MiB | peak / aggregated |",
        "|---|---|---|---|---|",
    ]
    paths = sorted(Path(directory).glob("*.json"))
    # A separate memory run (`--memory-only`) supersedes the memory rows of
    # the full run of the same backend.
    rerun = {p.stem[: -len("-memory")] for p in paths if p.stem.endswith("-memory")}
    for path in paths:
        result = json.loads(path.read_text())
        if path.stem in rerun:
            result["memory"] = []
        for row in result["steps"]:
            lines.append(
                f"| {result['backend']} | {row['backbone']} | {row['objective']} | "
                f"{row['batch_repetition']} | {row['wall_s']:.2f} | {row['cpu_ratio']:.3f} | "
                f"{row['wall_ratio']:.3f} | {row.get('cpu_over_same_work', 1.0):.3f} | "
                + (f"{row['plain_cpu_ratio']:.3f} |" if "plain_cpu_ratio" in row else "|")
            )
        backend = result["backend"]
        if result.get("settings", {}).get("memory_jit_compile"):
            backend += " (jit_compile=True)"
        for row in result["memory"]:
            memory.append(
                f"| {backend} | {row['batch_repetition']} | {row['aggregated_mib']:.0f} | "
                f"{row['peak_growth_mib']:.0f} | {row['peak_over_aggregated']:.2f} |"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(memory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="cnn,resnet", type=lambda t: t.split(","))
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--bs", default="1,2,3,4", type=lambda t: [int(v) for v in t.split(",")])
    parser.add_argument(
        "--image-shape", default="32,32,3", type=lambda t: [int(v) for v in t.split(",")]
    )
    parser.add_argument("--samples", type=int, default=576)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-batch", type=int, default=3072)
    parser.add_argument("--memory-only", action="store_true", help="skip the step timings")
    parser.add_argument(
        "--memory-jit-compile",
        action="store_true",
        help="TensorFlow: compile the memory call with XLA (jit_compile=True)",
    )
    parser.add_argument("--memory-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", help="JSON results path")
    parser.add_argument(
        "--tables", metavar="DIR", help="print the tables of DIR's results and exit"
    )
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.tables))
        return
    if args.out is None and args.memory_one is None:
        parser.error("--out is required")
    if 1 not in args.bs:
        parser.error("--bs must include 1, the reference step")
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.memory_one is not None:
        print(json.dumps(memory_row(args, args.memory_one)))
        return
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, *args.image_shape), dtype=np.float32)
    y = rng.integers(0, throughput.CLASSES, args.samples)
    tasks = {} if args.memory_only else step_tasks(args, x, y)
    wall, cpu = throughput.measure(tasks, args.repeats, warmup=1, seed=0)
    steps = []
    for (name, objective, b, reference), times in wall.items():
        if reference or objective == "plain":
            continue
        reference_wall = statistics.median(wall[name, objective, 1, False])
        reference_cpu = statistics.median(cpu[name, objective, 1, False])
        row = {
            "backbone": name,
            "objective": objective,
            "batch_repetition": b,
            "wall_s": statistics.median(times),
            "cpu_s": statistics.median(cpu[name, objective, b, False]),
            "wall_ratio": statistics.median(times) / (b * reference_wall),
            "cpu_ratio": statistics.median(cpu[name, objective, b, False]) / (b * reference_cpu),
            # The plain backbone: a step on a b-times larger batch over b steps.
            "plain_cpu_ratio": statistics.median(cpu[name, "plain", b, False])
            / (b * statistics.median(cpu[name, "plain", 1, False])),
        }
        if b > 1:
            # The same groups per step from a b-times larger batch.
            row["cpu_over_same_work"] = row["cpu_s"] / statistics.median(
                cpu[name, objective, b, True]
            )
            row["wall_over_same_work"] = row["wall_s"] / statistics.median(
                wall[name, objective, b, True]
            )
        steps.append(row)
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "command": "KERAS_BACKEND="
        + keras.backend.backend()
        + " python benchmarks/batch_repetition.py "
        + " ".join(argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "steps": steps,
        "memory": memory_rows(args, argv),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for row in steps:
        print(
            f"{row['backbone']:7s} {row['objective']:5s} b={row['batch_repetition']}: "
            f"wall {row['wall_s']:.3f} s (ratio {row['wall_ratio']:.3f}), "
            f"cpu ratio {row['cpu_ratio']:.3f}, "
            f"over same work {row.get('cpu_over_same_work', 1.0):.3f}"
        )
    for row in result["memory"]:
        print(
            f"memory b={row['batch_repetition']}: peak growth {row['peak_growth_mib']:.1f} MiB, "
            f"aggregated {row['aggregated_mib']:.1f} MiB ({row['peak_over_aggregated']:.2f} x)"
        )


if __name__ == "__main__":
    main()
