"""Quickstart: AgrLearn on scikit-learn's digits, offline, in about a minute.

Trains a small Conv2D classifier and `keras_agrlearn.wrap(classifier,
width=2)` with the library's defaults: n=3 (three images per forward pass,
stacked along the channel axis), MIMO-style input repetition 0.5 (half of
each training batch shows one image in all three slots) and replicated
inference, the recipe that won in docs/RESULTS.md. It prints both models'
test accuracy and negative log-likelihood. The AgrLearn model trains n x the
epochs: with repetition 0.5 an epoch makes 0.67 of the plain network's
forward passes, so that is twice the plain network's compute.

    KERAS_BACKEND=jax python examples/quickstart_digits.py
"""

import argparse

import keras
import numpy as np

import keras_agrlearn


def load_digits(seed=0):
    """The 1797 8x8 digits as `(N, 8, 8, 1)` floats in [0, 1]: 80% train, 20% test."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    test = len(x) // 5
    return (x[test:], y[test:]), (x[:test], y[:test])


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


def train_and_test(model, data, epochs, seed):
    (x, y), (x_test, y_test) = data
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras_agrlearn.NegativeLogLikelihood()],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    _, accuracy, nll = model.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0)
    return accuracy, nll


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="plain epochs; AgrLearn trains n x")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--width", type=float, default=2.0)
    parser.add_argument("--repetition", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_digits(args.seed)

    keras.utils.set_random_seed(args.seed)
    plain = train_and_test(backbone(), data, args.epochs, args.seed)
    keras.utils.set_random_seed(args.seed)
    model = keras_agrlearn.wrap(
        backbone(), n=args.n, width=args.width, repetition=args.repetition, seed=args.seed
    )
    aggregated = train_and_test(model, data, args.n * args.epochs, args.seed)
    print(f"plain backbone, {args.epochs} epochs: test accuracy {plain[0]:.4f}, NLL {plain[1]:.3f}")
    print(
        f"AgrLearn n={args.n}, width={args.width:g}, repetition={args.repetition:g}, "
        f"{args.n * args.epochs} epochs: "
        f"test accuracy {aggregated[0]:.4f}, NLL {aggregated[1]:.3f}"
    )
    return plain, aggregated


if __name__ == "__main__":
    main()
