"""Quickstart: AgrLearn dropped into an unchanged Keras workflow, on digits.

Trains a small Conv2D classifier on scikit-learn's digits (offline), then
`keras_agrlearn.wrap(classifier)` of it with the library's defaults and
*the same* `compile` and `fit` call (optimizer, loss, batch size, epochs),
each with `--seeds` paired seeds (the same seed for both models of a pair).
The defaults: two images per forward pass stacked along the channel axis,
the backbone's own hidden widths, every batch grouped once, half of the
samples showing one image in both slots (input repetition) and replicated
inference, so a prediction depends on its own image only. That costs about
the plain model's training and inference FLOPs.

Each model is tempered on a validation split held out from the training
images (`keras_agrlearn.calibrate_temperature`), so an over-confident model
does not make the other look better calibrated than it is. The script
prints each model's test accuracy, raw and tempered negative
log-likelihood and its cost (parameters, training and prediction time),
then the paired differences with their 95 % intervals over seeds and a
verdict (`keras_agrlearn.paired_comparison`): "aggregation helps", "no
difference shown" or "plain is better". On 359 test images and a few seeds
the intervals are wide; the compute-fair study (docs/RESULTS.md) measures
where these defaults win: on narrow, overfitting MNIST-1D networks and with
scarce data; on digits they tie or lose up to a point.

    KERAS_BACKEND=jax python examples/quickstart_digits.py

Two to three minutes on JAX or TensorFlow on a laptop CPU (three seeds);
eager PyTorch is slower.
"""

import os

# Before TensorFlow is first imported (by Keras, for its data utilities):
# without these, its C++ log lines come before the results, under any backend.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    # TensorFlow computes nothing here; its oneDNN notice is all it would say.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import argparse  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import keras_agrlearn  # noqa: E402

absl_logging.set_verbosity(absl_logging.ERROR)


def load_digits(seed=0):
    """The 1797 8x8 digits as `(N, 8, 8, 1)` floats in [0, 1].

    80 % train (of which the last fifth is held out for the temperature),
    20 % test: 1150 / 288 / 359 images.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    test = len(x) // 5
    val = test + (len(x) - test) // 5
    return (x[val:], y[val:]), (x[test:val], y[test:val]), (x[:test], y[:test])


def backbone():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )


def train_and_test(model, data, epochs):
    """The user's own training script: the same for both models."""
    (x, y), validation, (x_test, y_test) = data
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras_agrlearn.NegativeLogLikelihood()],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = keras_agrlearn.evaluate_uncertainty(
        model, x_test, y_test, validation_data=validation, batch_size=len(x_test)
    )
    return {
        "accuracy": scores["accuracy"],
        "nll": scores["nll"],
        "tempered_nll": scores["tempered_nll"],
        "temperature": scores["temperature"],
        "train_seconds": seconds,
        "evaluate_seconds": time.perf_counter() - start,
        "parameters": model.count_params(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs, the same for both models")
    parser.add_argument(
        "--n", type=int, default=None, help="samples per forward pass (default: wrap's, 2)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds (at least 2)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed; data split too")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 for an interval over seeds, got {args.seeds}")
    data = load_digits(args.seed)
    call = "wrap(backbone)" if args.n is None else f"wrap(backbone, n={args.n})"
    runs = {"plain backbone": [], call: []}
    for seed in range(args.seed, args.seed + args.seeds):
        keras.utils.set_random_seed(seed)
        runs["plain backbone"].append(train_and_test(backbone(), data, args.epochs))
        keras.utils.set_random_seed(seed)
        n = {} if args.n is None else {"n": args.n}
        model = keras_agrlearn.wrap(backbone(), seed=seed, **n)
        runs[call].append(train_and_test(model, data, args.epochs))
    print(
        f"{args.epochs} epochs, {args.seeds} seeds, {len(data[2][1])} test images "
        "(means over seeds; NLL tempered on a held-out validation split)"
    )
    for name, results in runs.items():
        mean = {key: np.mean([r[key] for r in results]) for key in results[0]}
        print(
            f"{name:16s} accuracy {mean['accuracy']:.4f}, NLL {mean['nll']:.3f} "
            f"(tempered {mean['tempered_nll']:.3f}, T={mean['temperature']:.2f}); "
            f"{results[0]['parameters']:,} parameters, trained in "
            f"{mean['train_seconds']:.0f} s, evaluated in {mean['evaluate_seconds']:.1f} s"
        )
    plain, aggregated = runs.values()
    comparison = keras_agrlearn.paired_comparison(
        {"accuracy": [r["accuracy"] for r in plain], "nll": [r["tempered_nll"] for r in plain]},
        {
            "accuracy": [r["accuracy"] for r in aggregated],
            "nll": [r["tempered_nll"] for r in aggregated],
        },
    )
    print(f"{call} - plain, paired over seeds, mean [95 % interval]:")
    for key, label in (("accuracy", "accuracy"), ("nll", "tempered NLL")):
        row = comparison[key]
        print(f"  {label:12s} {row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]")
    print(f"Verdict: {comparison['verdict']}.")
    return runs, comparison


if __name__ == "__main__":
    main()
