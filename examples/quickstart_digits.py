"""Quickstart: AgrLearn dropped into an unchanged Keras workflow, on digits.

Trains a small Conv2D classifier on scikit-learn's digits (offline), then
`keras_agrlearn.wrap(classifier)` of it with the library's defaults and
*the same* `compile` and `fit` call (optimizer, loss, batch size, epochs). It
prints both models' test accuracy, negative log-likelihood and training
time. The defaults: two images per forward pass stacked along the channel
axis, the backbone's own hidden widths, every batch grouped once, half of
the samples showing one image in both slots (input repetition) and
replicated inference, so a prediction depends on its own image only. That
costs about the plain model's training and inference FLOPs. It is a
demonstration of the workflow, not evidence: one seed on 359 test images.
In the compute-fair study (docs/RESULTS.md) these defaults win on narrow,
overfitting MNIST-1D networks and with scarce data, and tie or lose up to
a point on digits.

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
    parser.add_argument(
        "--n", type=int, default=None, help="samples per forward pass (default: wrap's, 2)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_digits(args.seed)

    keras.utils.set_random_seed(args.seed)
    plain = train_and_test(backbone(), data, args.epochs)
    keras.utils.set_random_seed(args.seed)
    if args.n is None:
        model, call = keras_agrlearn.wrap(backbone(), seed=args.seed), "wrap(backbone)"
    else:
        model = keras_agrlearn.wrap(backbone(), args.n, seed=args.seed)
        call = f"wrap(backbone, n={args.n})"
    aggregated = train_and_test(model, data, args.epochs)
    for name, (accuracy, nll, seconds) in (("plain backbone", plain), (call, aggregated)):
        print(
            f"{name:24s} {args.epochs} epochs: test accuracy {accuracy:.4f}, "
            f"NLL {nll:.3f}, trained in {seconds:.0f} s"
        )
    return plain, aggregated


if __name__ == "__main__":
    main()
