"""AgrLearn on MNIST-1D, generated offline: accuracy, NLL and calibration.

MNIST-1D (Greydanus, 2020) is a 40-point 1-D signal version of MNIST, small
enough for a CPU yet hard enough to separate models. This script generates it
with the `mnist1d` package (no download), trains a 3-layer Conv1D classifier
and `keras_agrlearn.wrap` of it for n times the epochs (the same number of
forward passes without repetition; twice as many with n=3 and
repetition 0.5), and prints test
accuracy, negative log-likelihood and expected calibration error for the
replicated, contextual and batched test protocols.

    KERAS_BACKEND=jax python examples/mnist1d.py --n 3 --width 3 --repetition 0.5

The defaults are the recipe that won in docs/RESULTS.md; `--width` also
widens the plain network so that both have the same width.
"""

import argparse

import keras
import numpy as np

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
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--width", type=float, default=3.0)
    parser.add_argument("--repetition", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=20, help="plain epochs; AgrLearn trains n x")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (x, y), (x_test, y_test) = load_mnist1d(args.samples)

    def report(name, model):
        result = model.evaluate(x_test, y_test, batch_size=500, return_dict=True, verbose=0)
        print(
            f"{name}: accuracy {result['accuracy']:.4f}, NLL {result['nll']:.4f}, "
            f"ECE {result['ece']:.4f}"
        )
        return result

    keras.utils.set_random_seed(args.seed)
    plain = compiled(backbone(keras_agrlearn.scaled_width(args.channels, args.width)))
    plain.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    results = {"plain": report(f"plain, {args.epochs} epochs", plain)}

    keras.utils.set_random_seed(args.seed)
    model = compiled(
        keras_agrlearn.wrap(
            backbone(args.channels), n=args.n, width=args.width, repetition=args.repetition,
            seed=args.seed,
        )
    )
    model.fit(x, y, batch_size=args.batch_size, epochs=args.n * args.epochs, verbose=0)
    name = f"AgrLearn n={args.n} width={args.width:g}, {args.n * args.epochs} epochs"
    for inference in ("replicate", "contextual", "group"):
        # The same weights in a model built for another test protocol.
        scored = compiled(
            keras_agrlearn.wrap(
                backbone(args.channels), n=args.n, width=args.width, inference=inference
            )
        )
        scored.set_weights(model.get_weights())
        results[inference] = report(f"{name}, {inference} inference", scored)
    return results


if __name__ == "__main__":
    main()
