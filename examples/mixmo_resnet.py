"""Feature mixing (MixMo) on a small ResNet: `wrap(resnet, mixing="cut")`.

Builds a small CIFAR-style ResNet (a 3x3 stem convolution, then two stages
of one basic block each, batch-normalised) for scikit-learn's 8x8 digits
(offline), wraps it with

    keras_agrlearn.wrap(resnet, n=2, mixing="cut", objective="slots")

and trains it with the `keras_agrlearn.MixingDecay` callback. The stem
convolution becomes two per-slot encoders (`MixedEncoders`, the FLOPs of the
one convolution over both images' channels it replaces). In training their
feature maps are mixed: with probability 0.5 by a box mask over the feature
map (CutMix of the features), otherwise linearly, with ratios drawn from
Beta(2, 2), and each slot's loss is weighted by its share of the mix. At
inference the features are summed, so predicting costs what `mixing="sum"`
(the default) costs. For comparison the script also trains `mixing="sum"`
with the same `compile` and `fit` call.

It prints both models' test accuracy and training time. One seed on 359
test images: a demonstration of the workflow, not evidence; docs/MIMO.md
has a paired comparison over seeds.

    KERAS_BACKEND=jax python examples/mixmo_resnet.py            # 30 epochs
    KERAS_BACKEND=jax python examples/mixmo_resnet.py --quick    # 2 epochs, 300 images

Eager PyTorch is slower than JAX and TensorFlow.
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


def resnet(filters=(16, 32), classes=10):
    """A small ResNet: stem convolution, one basic block per stage."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    for stage, width in enumerate(filters):
        stride = 2 if stage > 0 else 1
        y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.BatchNormalization(momentum=0.9)(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization(momentum=0.9)(y)
        shortcut = x
        if stride != 1 or x.shape[-1] != width:
            shortcut = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False)(x)
            shortcut = keras.layers.BatchNormalization(momentum=0.9)(shortcut)
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet")


def train_and_test(model, data, epochs, batch_size, callbacks=()):
    """The same `compile` and `fit` for both models."""
    (x, y), (x_test, y_test) = data
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=list(callbacks))
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return accuracy, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs on 300 images")
    options = parser.parse_args(argv)
    (x, y), test = load_digits()
    if options.quick:
        options.epochs, x, y = 2, x[:300], y[:300]
    results = {}
    for mixing in ("sum", "cut"):
        keras.utils.set_random_seed(options.seed)
        model = keras_agrlearn.wrap(
            resnet(), n=2, mixing=mixing, objective="slots", seed=options.seed
        )
        callbacks = [keras_agrlearn.MixingDecay()] if mixing == "cut" else []
        results[mixing] = train_and_test(
            model, ((x, y), test), options.epochs, options.batch_size, callbacks
        )
        accuracy, seconds = results[mixing]
        print(f'mixing="{mixing}": test accuracy {accuracy:.3f}, trained in {seconds:.1f} s')
    return results


if __name__ == "__main__":
    main()
