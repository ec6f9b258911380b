"""Quickstart: AgrLearn dropped into an unchanged Keras workflow, on digits.

Trains a small Conv2D classifier on scikit-learn's digits (offline), then
`keras_agrlearn.wrap(classifier, n=3)` of it with the library's defaults and
*the same* `compile` and `fit` call (optimizer, loss, batch size, epochs). It
prints both models' test accuracy, negative log-likelihood and training
time. The defaults: three images per forward pass stacked along the channel
axis, hidden layers sqrt(3) = 1.73 x as wide, every batch grouped 3 times
(batch repetition), half of each grouping showing one image in all three
slots (input repetition) and replicated inference, so a prediction depends
on its own image only. An epoch of the wrapped model makes twice the plain
model's forward passes, each about 3 x as costly: it trains about 2.5-4 x
longer (docs/DROPIN.md).

    KERAS_BACKEND=jax python examples/quickstart_digits.py

About a minute on JAX or TensorFlow on a laptop CPU; eager PyTorch is slower.
"""

import argparse
import time

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


def train_and_test(model, data, epochs):
    """The user's own training script: the same for both models."""
    (x, y), (x_test, y_test) = data
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras_agrlearn.NegativeLogLikelihood()],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy, nll = model.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0)
    return accuracy, nll, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs, the same for both models")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_digits(args.seed)

    keras.utils.set_random_seed(args.seed)
    plain = train_and_test(backbone(), data, args.epochs)
    keras.utils.set_random_seed(args.seed)
    model = keras_agrlearn.wrap(backbone(), n=args.n, seed=args.seed)
    aggregated = train_and_test(model, data, args.epochs)
    for name, (accuracy, nll, seconds) in (
        ("plain backbone", plain),
        (f"wrap(backbone, n={args.n})", aggregated),
    ):
        print(
            f"{name:24s} {args.epochs} epochs: test accuracy {accuracy:.4f}, "
            f"NLL {nll:.3f}, trained in {seconds:.0f} s"
        )
    return plain, aggregated


if __name__ == "__main__":
    main()
