"""Reproduces the AgrLearn evidence: plain backbone against aggregated variants.

One command trains every configuration with several seeds, records each run
as one JSON line, and writes `docs/EARLIER_STUDIES.md` (mean +- std tables) and PNG
plots to `docs/`:

    KERAS_BACKEND=jax python experiments/reproduce.py

Runs are resumable: a run whose record exists is not trained again, so an
interrupted study continues where it stopped, and `--report-only` rebuilds the
report from the records. See `--help` for the grid options; `--quick` is a
minutes-long smoke version.

The study (phases, in order):

- `grid`: MNIST-1D, n x width. Every run is evaluated every `epochs / 4`
  epochs, so one run gives the equal-epochs point (`epochs`), the
  equal-compute point (`n * epochs`: an n-fold model makes n times fewer
  forward passes per epoch) and the training-length curve. The plain backbone
  (n=1) trains `max(ns) * epochs` epochs, so that it too gets every length.
  AgrLearn runs are also scored with the three test protocols.
- `digits`: the same on scikit-learn digits (8x8 images, Conv2D backbone).
- `repetition`: MIMO-style input repetition on the best AgrLearn recipe.
- `data`: test accuracy against the share of training data, best plain
  against best AgrLearn, at a fixed number of optimisation steps.
- `large`: the best recipes on a larger generated MNIST-1D.

"Best" recipes are chosen on a validation split, never on the test set.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_agrlearn  # noqa: E402
from experiments import backbones  # noqa: E402
from experiments import report  # noqa: E402
from experiments.datasets import load_digits  # noqa: E402
from experiments.datasets import load_mnist1d  # noqa: E402
from experiments.records import PROTOCOLS  # noqa: E402
from experiments.records import best_recipes  # noqa: E402
from experiments.records import best_repetition  # noqa: E402
from experiments.records import load_records  # noqa: E402
from experiments.scoring import scores  # noqa: E402

PHASES = ("grid", "digits", "repetition", "data", "large")

# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def build(spec, inference="replicate"):
    maker = (
        backbones.mnist1d_conv1d if spec["dataset"].startswith("mnist1d") else backbones.digits_cnn
    )
    backbone = maker(spec["channels"])
    if spec["n"] == 1 and spec["repetition"] == 0:
        if spec["width"] == 1:
            return backbone
        # n=1 is the plain architecture; width > 1 gives the widened plain net.
        return keras_agrlearn.wrap(backbone, n=1, width=spec["width"], name="plain_wide")
    return keras_agrlearn.wrap(
        backbone,
        n=spec["n"],
        width=spec["width"],
        inference=inference,
        repetition=spec["repetition"],
        seed=spec["seed"],
    )


def train(spec, data, protocols=True):
    """Trains one configuration; returns its record."""
    (x, y), (x_val, y_val), (x_test, y_test) = data
    if spec["fraction"] < 1:
        keep = np.random.default_rng(spec["seed"]).permutation(len(x))
        keep = keep[: int(round(spec["fraction"] * len(x)))]
        x, y = x[keep], y[keep]
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec["seed"])
    model = build(spec)
    model.compile(
        optimizer=keras.optimizers.Adam(spec["lr"]),
        loss="sparse_categorical_crossentropy",
        run_eagerly=spec.get("eager", False),
    )
    record = dict(spec, params=int(model.count_params()), checkpoints=[], protocols={})
    done, seconds = 0, 0.0
    for stop in spec["checkpoints"]:
        start = time.perf_counter()
        model.fit(x, y, batch_size=spec["batch_size"], epochs=stop, initial_epoch=done, verbose=0)
        seconds += time.perf_counter() - start
        done = stop
        point = {"epoch": stop, "train_s": round(seconds, 2)}
        point["val"] = scores(model, x_val, y_val, spec["eval_batch"])
        point["test"] = scores(model, x_test, y_test, spec["eval_batch"])
        record["checkpoints"].append(point)
    if protocols and spec["n"] > 1:
        weights = model.get_weights()
        # The trained model already uses replicate inference.
        record["protocols"]["replicate"] = point["test"]
        for protocol in PROTOCOLS[1:]:
            other = build(spec, inference=protocol)
            other.run_eagerly = spec.get("eager", False)
            other.set_weights(weights)
            record["protocols"][protocol] = scores(other, x_test, y_test, spec["eval_batch"])
    return record


# ---------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------


def spec_of(
    options,
    dataset,
    n,
    width,
    seed,
    *,
    epochs,
    phase,
    repetition=0.0,
    fraction=1.0,
    num_samples=None,
    channels=None,
    batch_size=None,
    length=None,
):
    """One configuration, trained `length * epochs` epochs.

    `epochs` is the equal-epochs length; by default an n-fold run lasts n times
    longer (equal compute) and the plain net as long as the longest of them.
    """
    length = length or (max(options.ns) if n == 1 else n)
    total = epochs * length
    step = max(1, epochs // 4)
    checkpoints = sorted(set(range(step, total + 1, step)) | {epochs, total})
    spec = {
        "phase": phase,
        "dataset": dataset,
        "n": n,
        "width": float(width),
        "repetition": float(repetition),
        "fraction": float(fraction),
        "seed": seed,
        "epochs": epochs,
        "checkpoints": checkpoints,
        "channels": channels or options.channels,
        "batch_size": batch_size or options.batch_size,
        "lr": options.lr,
        "num_samples": num_samples or options.num_samples,
        "eval_batch": options.eval_batch,
        "eager": options.eager,
    }
    spec["key"] = (
        "|".join(
            f"{k}={spec[k]}"
            for k in (
                "dataset",
                "num_samples",
                "channels",
                "n",
                "width",
                "repetition",
                "fraction",
                "seed",
                "epochs",
                "batch_size",
                "lr",
            )
        )
        + f"|max={total}"
    )
    return spec


def phase_specs(phase, options, records):
    seeds = range(options.seeds)
    if phase == "grid":
        return [
            spec_of(options, "mnist1d", n, w, s, epochs=options.epochs, phase=phase)
            for s in seeds
            for n, w in options.recipes
        ]
    if phase == "digits":
        return [
            spec_of(
                options,
                "digits",
                n,
                w,
                s,
                epochs=options.digits_epochs,
                phase=phase,
                num_samples=1797,
                channels=options.digits_channels,
                batch_size=32,
                repetition=r,
            )
            for n in options.ns
            for w in options.digits_widths
            for r in [0.0] + (options.digits_repetitions if n > 1 else [])
            for s in seeds
        ]
    best_plain, best_agr = best_recipes(records, "grid", num_samples=options.num_samples)
    if best_agr is None:
        return []
    n, width = best_agr
    if phase == "repetition":
        chosen = [best_agr] + [r for r in options.repetition_recipes or [] if r != best_agr]
        return [
            spec_of(options, "mnist1d", n_, w_, s, epochs=options.epochs, phase=phase, repetition=r)
            for (n_, w_) in chosen
            for r in options.repetitions
            for s in seeds
        ]
    if phase == "data":
        specs = []
        for fraction in options.fractions:
            if fraction >= 1:
                continue  # the grid runs hold the full-data points
            # The same number of optimisation steps as a full-data run.
            epochs = int(round(options.epochs / fraction))
            for n_, w_ in (best_plain, best_agr):
                for s in seeds:
                    # The plain net gets the AgrLearn run's length, no more.
                    specs.append(
                        spec_of(
                            options,
                            "mnist1d",
                            n_,
                            w_,
                            s,
                            epochs=epochs,
                            phase=phase,
                            fraction=fraction,
                            length=n,
                        )
                    )
        return specs
    if phase == "large":
        # The best plain and AgrLearn recipes, and AgrLearn with its best repetition.
        repetition = best_repetition(records, best_agr, options.num_samples)
        chosen = [(*best_plain, 0.0), (*best_agr, 0.0)]
        if repetition:
            chosen.append((*best_agr, repetition))
        return [
            spec_of(
                options,
                "mnist1d",
                n_,
                w_,
                s,
                epochs=options.epochs,
                phase=phase,
                num_samples=options.large_samples,
                repetition=r,
            )
            for (n_, w_, r) in chosen
            for s in seeds
        ]
    raise ValueError(phase)


def run_worker(options, phase, worker, workers):
    records = load_records(options.records)
    have = {r["key"] for r in records}
    specs = [s for s in phase_specs(phase, options, records) if s["key"] not in have]
    # Longest runs first, dealt round-robin, so the workers finish together.
    specs.sort(key=lambda s: -s["checkpoints"][-1] * s["fraction"] * (1 + s["width"]))
    mine = specs[worker::workers]
    datasets = {}
    out = Path(options.records) / f"records-{phase}-{worker}.jsonl"
    for i, spec in enumerate(mine):
        name = (spec["dataset"], spec["num_samples"])
        if name not in datasets:
            datasets[name] = (
                load_digits()
                if spec["dataset"] == "digits"
                else load_mnist1d(spec["num_samples"], Path(options.records) / "cache")
            )
        start = time.perf_counter()
        record = train(spec, datasets[name], protocols=phase in ("grid", "digits", "repetition"))
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        last = record["checkpoints"][-1]
        print(
            f"[{phase} {worker}/{workers} {i + 1}/{len(mine)}] n={spec['n']} "
            f"w={spec['width']} r={spec['repetition']} f={spec['fraction']} "
            f"s={spec['seed']}: test acc {last['test']['acc']:.4f} after "
            f"{last['epoch']} epochs ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def run_phase(options, phase, argv):
    if options.workers == 1:
        run_worker(options, phase, 0, 1)
        return
    # The dispatch overhead of small models leaves cores idle in one process.
    procs = [
        subprocess.Popen([sys.executable, __file__, *argv, "--phases", phase, "--worker", str(i)])
        for i in range(options.workers)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"phase {phase}: a worker failed with exit codes {codes}")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def floats(text):
    return [float(v) for v in text.split(",") if v]


def recipes(text):
    return [(int(n), float(w)) for n, w in (item.split("x") for item in text.split(",") if item)]


def ints(text):
    return [int(v) for v in text.split(",") if v]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--phases",
        default="grid,repetition,data,digits",
        help=f"comma-separated subset of {','.join(PHASES)}",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ns", type=ints, default=[1, 2, 3, 4])
    p.add_argument("--widths", type=floats, default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument(
        "--recipes",
        type=recipes,
        default=None,
        help="grid subset as n x width pairs, e.g. 1x1,2x3 (default: ns x widths)",
    )
    p.add_argument(
        "--eager",
        action="store_true",
        help="run models eagerly: slower steps, no compilation (tiny runs)",
    )
    p.add_argument("--epochs", type=int, default=20, help="equal-epochs length")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--num-samples",
        type=int,
        default=15000,
        help="MNIST-1D samples generated: 64%% train, 16%% val, 20%% test",
    )
    p.add_argument("--large-samples", type=int, default=40000)
    p.add_argument("--eval-batch", type=int, default=600)
    p.add_argument("--repetitions", type=floats, default=[0.25, 0.5])
    p.add_argument(
        "--repetition-recipes",
        type=recipes,
        default=None,
        help="n x width recipes given the repetition shares too, besides the best AgrLearn recipe",
    )
    p.add_argument("--fractions", type=floats, default=[0.1, 0.2, 0.5, 1.0])
    p.add_argument("--digits-epochs", type=int, default=30)
    p.add_argument("--digits-channels", type=int, default=16)
    p.add_argument("--digits-widths", type=floats, default=[1.0, 2.0])
    p.add_argument(
        "--digits-repetitions",
        type=floats,
        default=[0.5],
        help="repetition shares also tried for every digits recipe with n > 1",
    )
    p.add_argument("--records", default=str(ROOT / "runs" / "reproduce"))
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test of the whole pipeline"
    )
    options = p.parse_args(argv)
    if options.quick:
        options.seeds = 1
        options.ns, options.widths = [1, 2], [1.0]
        options.epochs, options.digits_epochs = 1, 1
        options.num_samples, options.large_samples = 250, 300
        options.repetitions, options.fractions = [0.5], [0.5, 1.0]
        options.digits_widths = [1.0]
        options.digits_repetitions = []
        # Op-by-op JAX compiles every new op shape: compiled steps are quicker.
        options.batch_size, options.eval_batch = 32, 10
        options.eager = keras.backend.backend() != "jax"
        options.recipes = None
    if options.recipes is None:
        options.recipes = [(n, w) for n in options.ns for w in options.widths]
    options.ns = sorted({n for n, _ in options.recipes})
    options.phases = [p for p in options.phases.split(",") if p]
    unknown = set(options.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    return options


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse(argv)
    Path(options.records).mkdir(parents=True, exist_ok=True)
    if options.worker is not None:
        run_worker(options, options.phases[0], options.worker, options.workers)
        return
    if not options.report_only:
        passthrough = [a for a in argv if a not in ("--report-only",)]
        passthrough = _drop_option(passthrough, "--phases")
        for phase in options.phases:
            run_phase(options, phase, passthrough)
    report.write(load_records(options.records), options, argv)


def _drop_option(argv, name):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    main()
