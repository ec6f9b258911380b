"""Paired check of feature mixing: `wrap(mixing="sum")` against `mixing="cut"`.

MNIST-1D (5,000 generated samples: 3,200 train, 800 validation, 1,000 test),
the study's 3-layer Conv1D backbone, `wrap(n=2, width=1.0,
objective="slots")` with the library's other defaults (input repetition 0.5,
one grouping per batch), Adam with a cosine learning-rate decay, the same
epochs, batch order and seeds for both arms. The "cut" arm uses MixMo's
settings (`mixing_alpha=2`, `mixing_prob=0.5`, `mixing_root=3`) and the
`MixingDecay` callback. Mixing costs no kernel FLOPs, which the script checks
with the FLOP counter (forward FLOPs per pass and passes per epoch of both
arms) before training.

It prints a Markdown table (docs/MIMO.md quotes it) and writes the per-seed
records to `--out`:

    nice -n 10 env KERAS_BACKEND=jax python experiments/mixing_check.py

A paired t-interval over 3 seeds is wide; the check says whether mixing
breaks or helps a small network, not by how much it helps a large one.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_agrlearn  # noqa: E402
from experiments import backbones  # noqa: E402
from experiments import datasets  # noqa: E402
from experiments.batches import OrderedBatches  # noqa: E402
from keras_agrlearn import _flops  # noqa: E402

ARMS = ("sum", "cut")


BACKBONES = ("conv1d", "resnet")


def backbone(options):
    """The Conv1D of the studies at `--channels`, or their 1D ResNet-8."""
    if options.backbone == "resnet":
        return backbones.small_resnet((40, 1))
    return backbones.mnist1d_conv1d(options.channels)


def build(mixing, seed, options):
    keras.utils.set_random_seed(seed)
    return keras_agrlearn.wrap(
        backbone(options),
        n=2,
        width=1.0,
        objective="slots",
        mixing=mixing,
        seed=seed,
    )


def training_cost(model, samples, batch_size):
    """Forward FLOPs per pass and passes per epoch, from the model's settings."""
    return _flops.forward_flops(model), _flops.model_passes_per_epoch(model, samples, batch_size)


def run(mixing, seed, data, options):
    (x, y), _, (x_test, y_test) = data
    model = build(mixing, seed, options)
    steps = options.epochs * math.ceil(len(x) / options.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(options.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    callbacks = [keras_agrlearn.MixingDecay()] if mixing != "sum" else []
    start = time.perf_counter()
    model.fit(
        OrderedBatches(x, y, options.batch_size, seed),
        epochs=options.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    probs = model.predict(x_test, batch_size=500, verbose=0)
    return {
        "mixing": mixing,
        "seed": seed,
        "test_acc": float(np.mean(np.argmax(probs, -1) == y_test)),
        "fit_seconds": seconds,
    }


def t_interval(differences, confidence=0.95):
    differences = np.asarray(differences, dtype=float)
    mean = float(differences.mean())
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(differences) - 1) * stats.sem(differences)
    return mean, mean - half, mean + half


def report(records, costs, options, len_train):
    by_arm = {
        arm: {r["seed"]: r["test_acc"] for r in records if r["mixing"] == arm} for arm in ARMS
    }
    seeds = sorted(set(by_arm["sum"]) & set(by_arm["cut"]))
    differences = [by_arm["cut"][s] - by_arm["sum"][s] for s in seeds]
    mean, low, high = t_interval(differences)
    name = "1D ResNet-8" if options.backbone == "resnet" else f"Conv1D-{options.channels}"
    lines = [
        f"MNIST-1D ({len_train:,} training samples), {name}, n=2, width 1, "
        f'objective="slots", {options.epochs} epochs, {len(seeds)} seeds '
        f"({keras.backend.backend()} backend).",
        "",
        "| mixing | forward FLOPs per pass | passes per epoch | test accuracy (mean) | per seed |",
        "|---|---|---|---|---|",
    ]
    for arm in ARMS:
        flops, passes = costs[arm]
        accs = [by_arm[arm][s] for s in seeds]
        shown = ", ".join(f"{100 * a:.1f}" for a in accs)
        lines.append(f"| {arm} | {flops:,} | {passes} | {100 * np.mean(accs):.2f} % | {shown} |")
    lines += [
        "",
        f"Paired difference cut - sum: {100 * mean:+.2f} points, 95 % t-interval over "
        f"the seeds [{100 * low:+.2f}, {100 * high:+.2f}].",
    ]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=160)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbone", choices=BACKBONES, default="conv1d")
    p.add_argument("--channels", type=int, default=32, help="of the Conv1D")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--cache", default="docs/results/cache", help="relative to the repository")
    p.add_argument("--out", default=None, help="JSON file for the per-seed records")
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 seed, 1,000 samples")
    options = p.parse_args(argv)
    if options.quick:
        options.epochs, options.seeds, options.samples = 2, options.seeds[:1], 1000
    data = datasets.load_mnist1d(options.samples, ROOT / options.cache)
    samples = len(data[0][0])
    costs = {
        arm: training_cost(build(arm, 0, options), samples, options.batch_size) for arm in ARMS
    }
    if costs["sum"] != costs["cut"]:
        raise RuntimeError(f"The arms' training FLOPs differ: {costs}.")
    records = []
    for seed in options.seeds:
        for arm in ARMS:
            record = run(arm, seed, data, options)
            print(json.dumps(record), flush=True)
            records.append(record)
    table = report(records, costs, options, samples)
    print(table)
    if options.out:
        Path(options.out).write_text(
            json.dumps({"options": vars(options), "records": records, "table": table}, indent=1)
        )
    return records


if __name__ == "__main__":
    main()
