"""Reference backbones of the studies, the tuning job and the benchmarks.

Ordinary Keras classifiers, as users write them; `keras_agrlearn.wrap`
aggregates and widens them. The examples keep their own models, so that each
reads on its own.
"""

import keras


def mnist1d_conv1d(channels=32):
    """The 3-layer Conv1D classifier of the MNIST-1D measurements."""
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(channels, 5, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(channels, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(channels, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="conv1d",
    )


def digits_cnn(channels=16):
    """A two-convolution classifier for 8x8 digits."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(2 * channels, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="conv2d",
    )


def fashion_convnet(classes=10):
    """The small convnet of the Keras/TensorFlow image tutorials, for 28x28x1."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ],
        name="convnet",
    )


def cifar10_cnn():
    """Three convolutions for 32x32x3 images in [0, 255], rescaled inside."""
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="cifar10_cnn",
    )


def small_cnn(input_shape, classes=10):
    """Three convolutions and a softmax head: the input layer is a large share."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ],
        name="small_cnn",
    )


def small_resnet(input_shape=(28, 28, 1), filters=(16, 32, 64), classes=10, blocks=1, momentum=0.9):
    """A CIFAR-style ResNet, batch-normalised: a stem, then `blocks` basic
    blocks per stage (one: ResNet-8 style). An `input_shape` of rank 2
    (`(steps, channels)`, MNIST-1D) gives the same network with 1D
    convolutions.

    `momentum` is the batch normalisation's moving-average momentum: 0.9 (as
    in PyTorch and torchvision), not Keras' 0.99, whose moving statistics lag
    far behind the weights in a run of a few hundred steps (Fashion-MNIST, 5
    epochs of 10,000 images: 27 % test accuracy at 0.99 against 82 % after
    2 epochs at 0.9, same training accuracy)."""
    one_d = len(input_shape) == 2
    conv = keras.layers.Conv1D if one_d else keras.layers.Conv2D
    pool = keras.layers.GlobalAveragePooling1D if one_d else keras.layers.GlobalAveragePooling2D
    inputs = keras.Input(input_shape)
    x = conv(filters[0], 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    x = keras.layers.ReLU()(x)
    for stage, width in enumerate(filters):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = conv(width, 3, strides=stride, padding="same", use_bias=False)(x)
            y = keras.layers.BatchNormalization(momentum=momentum)(y)
            y = keras.layers.ReLU()(y)
            y = conv(width, 3, padding="same", use_bias=False)(y)
            y = keras.layers.BatchNormalization(momentum=momentum)(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = conv(width, 1, strides=stride, use_bias=False)(shortcut)
                shortcut = keras.layers.BatchNormalization(momentum=momentum)(shortcut)
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = pool()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet8" if blocks == 1 else "resnet")
