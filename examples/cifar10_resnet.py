"""AgrLearn with ResNet-18 on CIFAR-10, the paper's main setting.

Trains the CIFAR variant of ResNet-18 (3x3 stem, four stages of two basic
blocks with 64/128/256/512 filters, global average pooling) or `wrap` of it,
with the standard augmentation (4-pixel padding with random 32x32 crops and
horizontal flips) and per-channel normalisation, SGD with momentum and a
cosine learning-rate decay. CIFAR-10 is read with tensorflow-datasets, which
downloads it on first use (about 160 MB); the input pipeline is `tf.data`,
which Keras feeds to every backend.

    KERAS_BACKEND=jax python examples/cifar10_resnet.py --n 1          # plain
    KERAS_BACKEND=jax python examples/cifar10_resnet.py --n 2 --width 2

The paper trains for 200 epochs; one epoch of the plain ResNet-18 takes about
a minute on a current GPU and hours on a CPU.
"""

import argparse

import keras

import keras_agrlearn
from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def load_cifar10(split, batch_size, augment, shuffle_buffer=10_000, seed=None):
    """A batched `tf.data.Dataset` of normalised `(32, 32, 3)` float32 images.

    Args:
        split: a tensorflow-datasets split, e.g. `"train"` or `"test"`.
        batch_size: int, the batch size.
        augment: bool, whether to apply random crops (after 4-pixel zero
            padding) and horizontal flips; this also shuffles the data.
        shuffle_buffer: int, the shuffle buffer size when augmenting.
        seed: int or None, the seed of shuffling and augmentation.

    Returns:
        A dataset of `(image, label)` batches, labels int64 of shape `(B,)`.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    ds = tfds.load("cifar10", split=split, as_supervised=True)
    mean, std = tf.constant(MEAN), tf.constant(STD)

    def normalise(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        return (image - mean) / std, label

    def augment_one(image, label):
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, (32, 32, 3), seed=seed)
        return tf.image.random_flip_left_right(image, seed=seed), label

    ds = ds.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# ResNet-18 (CIFAR variant, He et al. 2016 as used by the AgrLearn paper)
# ---------------------------------------------------------------------------


def _conv_bn(x, filters, strides, name, relu=True, kernel_size=3):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_regularizer=keras.regularizers.L2(5e-4),
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, strides, name):
    shortcut = x
    y = _conv_bn(x, filters, strides, f"{name}_a")
    y = _conv_bn(y, filters, 1, f"{name}_b", relu=False)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, strides, f"{name}_proj", relu=False, kernel_size=1)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet18(input_shape=(32, 32, 3), classes=10, filters=64):
    """The CIFAR ResNet-18 as a Functional model, so `wrap` can rebuild it.

    `filters` is the stem width; the stages have 1, 2, 4 and 8 times as many.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, filters, 1, "stem")
    for stage, multiplier in enumerate((1, 2, 4, 8)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters * multiplier, strides, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="resnet18")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2, help="samples per group; 1 is the plain net")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--inference", default="replicate")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train = load_cifar10("train", args.batch_size, augment=True, seed=args.seed)
    test = load_cifar10("test", 500, augment=False)
    model = resnet18()
    if args.n > 1 or args.width != 1:
        model = keras_agrlearn.wrap(model, n=args.n, width=args.width, inference=args.inference)
    steps = args.epochs * (50_000 // args.batch_size + 1)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(args.lr, steps), momentum=0.9, nesterov=True
        ),
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            NegativeLogLikelihood(),
            ExpectedCalibrationError(),
        ],
    )
    model.fit(train, epochs=args.epochs, validation_data=test, verbose=2)
    results = model.evaluate(test, return_dict=True, verbose=0)
    print(
        f"n={args.n} width={args.width}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    )


if __name__ == "__main__":
    main()
