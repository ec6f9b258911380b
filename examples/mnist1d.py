"""AgrLearn on MNIST-1D, generated offline: accuracy, NLL and calibration.

MNIST-1D (Greydanus, 2020) is a 40-point 1-D signal version of MNIST, small
enough for a CPU yet hard enough to separate models. This script generates it
with the `mnist1d` package (no download) and trains, with the same `fit`
call (same epochs and batch size):

- the plain 3-layer Conv1D classifier;
- the plain classifier as wide as the wrapped one (`width` x the channels),
  so that widths are compared like with like (the plain classifier itself at
  the default width 1.0);
- `keras_agrlearn.wrap(classifier, n)` with the library's defaults: n=2 at
  the backbone's own widths, each batch grouped once, input repetition 0.5
  (or the `--n`, `--width`, `--batch-repetition` and `--repetition` given).

Equal epochs are not equal compute once `--width` or `--batch-repetition`
exceeds 1: docs/RESULTS.md compares the settings at equal FLOPs.

It prints test accuracy, negative log-likelihood, expected calibration error
and training time, and the wrapped model's scores under the replicated,
contextual and batched test protocols.

    KERAS_BACKEND=jax python examples/mnist1d.py
"""

import argparse
import os
import sys
import time

import keras

import keras_agrlearn
from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood


def load_mnist1d(num_samples=12000, seed=42):
    """MNIST-1D as `(N, 40, 1)` float32 signals: 80% train, 20% test.

    Generation runs locally and takes about 2 s per 1000 samples.
    """
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)
    x, x_test = (data[k][..., None].astype("float32") for k in ("x", "x_test"))
    y, y_test = (data[k].astype("int32") for k in ("y", "y_test"))
    return (x, y), (x_test, y_test)


def backbone(channels=32):
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(channels, 5, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(channels, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(channels, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mnist1d_cnn",
    )


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", NegativeLogLikelihood(), ExpectedCalibrationError()],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2, help="default: wrap's, 2")
    parser.add_argument(
        "--width", type=float, default=1.0, help="default: wrap's, 1.0 (the backbone's widths)"
    )
    parser.add_argument("--batch-repetition", type=int, default=None, help="default: wrap's, 1")
    parser.add_argument("--repetition", type=float, default=None, help="default: wrap's, 0.5")
    parser.add_argument("--epochs", type=int, default=20, help="the same for every model")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (x, y), (x_test, y_test) = load_mnist1d(args.samples)

    options = dict(
        n=args.n,
        width=args.width,
        batch_repetition=args.batch_repetition,
        repetition=args.repetition,
        seed=args.seed,
    )
    # The wrapped model's convolutions, widened by `width` (default 1.0: not widened).
    width = next(
        layer
        for layer in keras_agrlearn.wrap(backbone(args.channels), **options).layers
        if isinstance(layer, keras.layers.Conv1D)
    )

    def report(name, model, seconds=None):
        result = model.evaluate(x_test, y_test, batch_size=500, return_dict=True, verbose=0)
        took = "" if seconds is None else f", trained in {seconds:.0f} s"
        print(
            f"{name}: accuracy {result['accuracy']:.4f}, NLL {result['nll']:.4f}, "
            f"ECE {result['ece']:.4f}{took}"
        )
        return result

    def fit(model):
        """The same training call for every model."""
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
        return time.perf_counter() - start

    results = {}
    for key, channels in (("plain", args.channels), ("plain_wide", width.filters)):
        if key == "plain_wide" and channels == args.channels:
            results[key] = results["plain"]  # not widened: the plain classifier itself
            continue
        keras.utils.set_random_seed(args.seed)
        plain = compiled(backbone(channels))
        seconds = fit(plain)
        results[key] = report(f"plain, {channels} channels, {args.epochs} epochs", plain, seconds)

    keras.utils.set_random_seed(args.seed)
    model = compiled(keras_agrlearn.wrap(backbone(args.channels), **options))
    seconds = fit(model)
    name = f"wrap(n={args.n}), {width.filters} channels, {args.epochs} epochs"
    for inference in ("replicate", "contextual", "group"):
        # The same weights in a model built for another test protocol.
        scored = compiled(
            keras_agrlearn.wrap(backbone(args.channels), inference=inference, **options)
        )
        scored.set_weights(model.get_weights())
        results[inference] = report(
            f"{name}, {inference} inference", scored, seconds if inference == "replicate" else None
        )
    return results


if __name__ == "__main__":
    # `python examples/mnist1d.py` puts examples/ first on sys.path, where this
    # file would shadow the `mnist1d` package it imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    main()
