"""Searches the aggregation factor n and the width of an AgrLearn classifier.

Runs a KerasTuner search over `keras_agrlearn.tuning.AgrLearnHyperModel` on
one of three datasets, then prints a leaderboard and writes, under
`OUTPUT/DATASET_TUNER/`:

- `leaderboard.md`: the trials, best first (n, width, batch repetition,
  repetition, learning rate, score, forward passes, training FLOPs and
  their ratio to the plain network's, inference FLOPs, fit time);
- `best_model.keras`: the best trial's model, loadable with
  `keras.saving.load_model` once `keras_agrlearn` is imported;
- `score_by_n_width.png`: the best score for each n, one line per width.

With `--confirm-seeds K` it then retrains the best n=1 and the best n>1 trial
with K paired seeds, scores them on the test split (which the search never
scores) with temperatures fitted on the validation split, and prints and
writes to `verdict.md` the paired differences in accuracy and tempered NLL
with their 95 % intervals, each configuration's training and inference
FLOPs, and a verdict: "aggregation helps", "no difference shown" or "plain is
better" (`keras_agrlearn.tuning.confirm`).

Run again with the same `--output`, the search continues where it stopped
(`--overwrite` starts afresh), and so does the confirmation, seed by seed.
With the `KERASTUNER_*` variables set (see `tuning/distributed.py`), the
process is the chief oracle or one worker of a distributed search.

Examples:

    python tuning/search.py --dataset digits --trials 6 --epochs 5
    python tuning/search.py --dataset mnist1d --tuner bayesian --trials 12 \\
        --epochs 20 --output runs/mnist1d
    python tuning/search.py --dataset cifar10 --tuner hyperband --epochs 27
    python tuning/search.py --dataset digits --trials 6 --epochs 10 --confirm-seeds 5
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    # TensorFlow only loads data here; its oneDNN notice would come first.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import backbones  # noqa: E402
from experiments import datasets  # noqa: E402
from keras_agrlearn.tuning import AgrLearnHyperModel  # noqa: E402
from keras_agrlearn.tuning import confirm  # noqa: E402
from keras_agrlearn.tuning import leaderboard  # noqa: E402

DATASETS = ("digits", "mnist1d", "cifar10")
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"


# --- Data: (x_train, y_train), (x_val, y_val), (x_test, y_test) -------------


def load_cifar10(data_dir=None):
    """CIFAR-10 through tensorflow-datasets; the last 5000 training images
    are held out for validation."""
    import tensorflow_datasets as tfds

    def arrays(dataset):
        # Batches rather than `batch_size=-1`: one tensor of the whole split
        # aborts under `tfds.testing.mock_data` (std::length_error).
        images, labels = zip(*tfds.as_numpy(dataset))
        return np.concatenate(images), np.concatenate(labels).astype("int32")

    train, test = tfds.load(
        "cifar10",
        split=["train", "test"],
        as_supervised=True,
        batch_size=1000,
        data_dir=data_dir,
    )
    x, y = arrays(train)
    val = len(x) - max(1, len(x) // 10)
    return (x[:val], y[:val]), (x[val:], y[val:]), arrays(test)


def load(dataset, data_dir=None):
    """The dataset's (train, validation, test) splits.

    Digits and MNIST-1D come from the studies' offline loaders
    (experiments/datasets.py), with their fixed splits; MNIST-1D is cached
    under `data_dir` (default `runs/cache`).
    """
    if dataset == "digits":
        return datasets.load_digits()
    if dataset == "mnist1d":
        return datasets.load_mnist1d(5000, Path(data_dir or ROOT / "runs" / "cache"))
    return load_cifar10(data_dir)


# --- Backbones: plain classifiers that wrap() aggregates and widens ---------


def backbone(dataset):
    """The reference backbone of `dataset` (see experiments/backbones.py)."""
    return {
        "digits": backbones.digits_cnn,
        "mnist1d": backbones.mnist1d_conv1d,
        "cifar10": backbones.cifar10_cnn,
    }[dataset]()


# --- The search --------------------------------------------------------------


def make_tuner(args, hypermodel):
    common = dict(
        objective=OBJECTIVE,
        directory=args.output,
        project_name=f"{args.dataset}_{args.tuner}",
        overwrite=args.overwrite,
        seed=args.seed,
    )
    if args.tuner == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=args.trials, **common)
    if args.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=args.trials, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, factor=args.factor, **common)


def is_worker():
    """Whether this process is a worker of a distributed search."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def format_leaderboard(rows, objective=OBJECTIVE):
    lines = [
        f"| rank | trial | n | width | batch repetition | repetition | learning rate "
        f"| weight decay | epochs | {objective} | forward passes per sample "
        "| training MFLOPs per sample | training FLOPs x plain | inference MFLOPs | fit s "
        "| status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]

    def cell(value, spec, scale=None):
        if value is None:
            return ""
        return format(value if scale is None else value / scale, spec)

    for rank, row in enumerate(rows, 1):
        # n=1 trials train without repetitions, whatever was drawn.
        plain = row["n"] == 1
        lines.append(
            f"| {rank} | {row['trial']} | {row['n']} | {row['width']} | "
            f"{1 if plain else cell(row['batch_repetition'], '')} | "
            f"{0.0 if plain else cell(row['repetition'], '')} | "
            f"{cell(row['learning_rate'], '.3g')} | {cell(row['weight_decay'], '.3g')} | "
            f"{cell(row['epochs'], '.0f')} | {cell(row['score'], '.4f')} | "
            f"{cell(row['forward_passes'], '.1f')} | "
            f"{cell(row['training_flops'], '.3g', 1e6)} | "
            f"{cell(row['relative_training_flops'], '.2f')} | "
            f"{cell(row['inference_flops'], '.3g', 1e6)} | "
            f"{cell(row['fit_seconds'], '.0f')} | "
            f"{row['status']} |"
        )
    return "\n".join(lines)


def plot_scores(rows, path, title):
    """Best score per n, one line per width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {}
    for row in rows:
        if row["score"] is not None:
            key = (row["width"], row["n"])
            best[key] = max(best.get(key, row["score"]), row["score"])
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for width in sorted({w for w, _ in best}):
        points = sorted((n, score) for (w, n), score in best.items() if w == width)
        axes.plot(*zip(*points), marker="o", label=f"width {width}")
    axes.set_xlabel("n (samples aggregated)")
    axes.set_ylabel(f"best {OBJECTIVE}")
    axes.set_title(title)
    axes.set_xticks(sorted({n for _, n in best}))
    if best:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(tuner, data, args):
    """Prints the leaderboard and saves the table, the best model and the plot."""
    rows = leaderboard(tuner)
    table = format_leaderboard(rows)
    print(f"\nLeaderboard ({len(rows)} trials, {args.tuner} search on {args.dataset}):")
    print(table)
    project_dir = os.path.join(args.output, f"{args.dataset}_{args.tuner}")
    with open(os.path.join(project_dir, "leaderboard.md"), "w") as f:
        f.write(table + "\n")
    plot_path = os.path.join(project_dir, "score_by_n_width.png")
    plot_scores(rows, plot_path, f"{args.dataset}, {args.tuner} search")
    print(f"Plot: {plot_path}")
    completed = [row for row in rows if row["score"] is not None]
    if not completed:
        print("No trial completed; no best model.")
        return 1
    best = completed[0]
    flops = best["relative_training_flops"]
    print(
        f"Best: n={best['n']}, width={best['width']}, "
        f"learning rate={best['learning_rate']:.3g}, {OBJECTIVE}={best['score']:.4f}"
        + ("" if flops is None else f", training FLOPs {flops:.2f} x plain")
    )
    try:
        with warnings.catch_warnings():
            # Trial checkpoints hold the optimizer's state too, which the
            # best model, compiled afresh, does not need.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model = tuner.get_best_models(1)[0]
    except OSError as error:
        # A distributed search across hosts without a shared directory keeps
        # each trial's weights on the worker that trained it.
        print(f"The best trial's weights are not readable here ({error}).")
        return 0
    x_test, y_test = data[2]
    results = model.evaluate(
        x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True
    )
    print(f"Best model on the test set: accuracy={results['accuracy']:.4f}")
    model_path = os.path.join(project_dir, "best_model.keras")
    # A built (still untouched) optimizer saves all its slots, so the file
    # loads without a variable-count mismatch.
    model.optimizer.build(model.trainable_variables)
    model.save(model_path)
    print(f"Best model: {model_path}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--tuner", choices=TUNERS, default="random")
    parser.add_argument(
        "--trials",
        type=int,
        default=10,
        help="trials to run (random, bayesian); Hyperband's count follows --epochs and --factor",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="the plain network's epochs; each trial gets as many training FLOPs "
        "(Hyperband: the most)",
    )
    parser.add_argument("--factor", type=int, default=3, help="Hyperband's reduction factor")
    parser.add_argument("--output", default="agrlearn_tuning", help="output directory")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--width", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument(
        "--batch-repetition",
        type=int,
        nargs="+",
        default=None,
        help="batch repetitions to search (default: wrap's default for each n)",
    )
    parser.add_argument(
        "--repetition",
        type=float,
        nargs="+",
        default=None,
        help="input repetition shares to search (default: wrap's default)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=2.0,
        help="every trial's training-FLOP cap, times the plain network's FLOPs over --epochs "
        "(AgrLearnHyperModel's training_budget)",
    )
    parser.add_argument(
        "--equal-epochs",
        action="store_true",
        help="train every trial --epochs epochs instead of the most that fit in the cap",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        nargs="+",
        default=[3e-4, 3e-3],
        help="one value (fixed) or MIN MAX (searched on a log scale)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        nargs="+",
        default=[1e-4, 1e-1],
        help="AdamW's weight decay: one value (fixed) or MIN MAX (searched on a log scale)",
    )
    parser.add_argument(
        "--confirm-seeds",
        type=int,
        default=None,
        help="after the search, retrain the best n=1 and n>1 trials with this many paired "
        "seeds (at least 2) and print a verdict with 95%% intervals",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--samples", type=int, default=None, help="use only this many training samples"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir",
        default=None,
        help="tensorflow-datasets directory; also the MNIST-1D cache",
    )
    parser.add_argument("--overwrite", action="store_true", help="start afresh")
    parser.add_argument(
        "--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras fit verbosity"
    )
    args = parser.parse_args(argv)
    for name in ("learning_rate", "weight_decay"):
        if len(getattr(args, name)) > 2:
            parser.error(f"--{name.replace('_', '-')} takes one value or MIN MAX")
    if args.confirm_seeds is not None and args.confirm_seeds < 2:
        parser.error(
            f"--confirm-seeds must be at least 2 (an interval over seeds needs two "
            f"pairs), got {args.confirm_seeds}"
        )
    if args.confirm_seeds is not None and (1 not in args.n or max(args.n) < 2):
        parser.error("--confirm-seeds compares n=1 with n > 1: --n must list 1 and a larger n")
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = load(args.dataset, args.data_dir)
    (x_train, y_train), validation = data[0], data[1]
    if args.samples is not None:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    hypermodel = AgrLearnHyperModel(
        backbone(args.dataset),
        n=args.n,
        width=args.width,
        batch_repetition=args.batch_repetition,
        repetition=args.repetition,
        equal_compute=not args.equal_epochs,
        training_budget=args.budget,
        learning_rate=value_or_range(args.learning_rate),
        weight_decay=value_or_range(args.weight_decay),
    )
    tuner = make_tuner(args, hypermodel)
    if not is_worker():
        tuner.search_space_summary()
    tuner.search(
        x_train,
        y_train,
        validation_data=validation,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    if is_worker():
        return 0
    # A chief oracle writes its state before it lets go of the last trial
    # that ended; saving again keeps a rerun from training that trial anew.
    tuner.save()
    status = report(tuner, data, args)
    if status or args.confirm_seeds is None:
        return status
    return confirm_best(tuner, (x_train, y_train), validation, data[2], args)


def value_or_range(values):
    return values[0] if len(values) == 1 else tuple(values)


def confirm_best(tuner, train, validation, holdout, args):
    """Retrains the best n=1 and n>1 trials over paired seeds; prints the verdict."""
    print(
        f"\nConfirming with {args.confirm_seeds} paired seeds: the best n=1 and n>1 "
        f"trials, retrained and scored on the {len(holdout[1])} test samples."
    )
    result = confirm(
        tuner,
        *train,
        validation_data=validation,
        holdout_data=holdout,
        seeds=args.confirm_seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        first_seed=args.seed,
    )
    print(result["report"], end="")
    print(f"Verdict: {os.path.join(tuner.project_dir, 'verdict.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
