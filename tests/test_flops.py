"""keras_agrlearn._flops: forward FLOPs counted from the layers, passes per epoch."""

import keras
import pytest

from keras_agrlearn import _flops
from keras_agrlearn import wrap


def _dense_backbone(hidden=128):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_dense_model():
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)]
    )
    # Two FLOPs per weight; biases and activations are not counted.
    assert _flops.forward_flops(model) == 2 * (8 * 16 + 16 * 4)


def test_conv1d_model():
    model = keras.Sequential(
        [
            keras.Input((10, 2)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.Conv1D(5, 3, strides=2, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    first = 8 * (3 * 2 * 4)  # 8 output steps, a 3 x 2 -> 4 kernel
    second = 4 * (3 * 4 * 5)  # stride 2 with "same" padding: 4 steps
    head = (4 * 5) * 3
    assert _flops.forward_flops(model) == 2 * (first + second + head)


def test_conv2d_model():
    inputs = keras.Input((7, 7, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.SeparableConv2D(4, 1, name="separable")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    conv = 3 * 3 * (3 * 3 * 3 * 6)  # 3 x 3 positions
    depthwise = 3 * 3 * (3 * 3 * 6 * 1)
    separable = 3 * 3 * (1 * 1 * 6 * 1 + 1 * 1 * 6 * 4)
    head = 4 * 10
    assert _flops.forward_flops(model) == 2 * (conv + depthwise + separable + head)


def test_nested_model_is_counted_once():
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2)(inner(inputs))
    model = keras.Model(inputs, outputs)
    assert _flops.forward_flops(model) == 2 * (8 * 16 + 16 * 2)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("width", [1.0, 1.5, 2.0, 3.0])
def test_wrapped_model_grows_with_width_squared(n, width):
    model = wrap(_dense_backbone(), n=n, width=width)
    hidden = int(128 * width)
    # A group of n samples in, n predictions out, hidden layers widened.
    expected = 2 * (n * 4 * hidden + hidden * hidden + hidden * n * 2)
    assert _flops.forward_flops(model) == expected
    narrow = _flops.forward_flops(wrap(_dense_backbone(), n=n, width=1.0))
    # The hidden-to-hidden layer dominates: about width**2 times the pass at
    # width 1 (the input and head layers grow with width only).
    assert _flops.forward_flops(model) / narrow == pytest.approx(width**2, rel=0.1)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, inputs):
        return self.dense(inputs)


def test_layer_without_symbolic_call_is_refused():
    # Called eagerly only: the layer's output shape per position is unknown.
    model = _Subclassed()
    model(keras.ops.zeros((2, 8)))
    with pytest.raises(ValueError, match="has not been called on a symbolic input"):
        _flops.forward_flops(model)


@pytest.mark.parametrize(
    "samples, batch_size, n, repetition, batch_repetition, expected",
    [
        (100, 10, 1, 0.0, 1, 100),
        (100, 10, 2, 0.0, 1, 50),
        (25, 10, 2, 0.0, 1, 5 + 5 + 3),  # the last group of each batch is padded
        (100, 10, 3, 0.5, 1, 10 * (5 + 2)),  # 5 repeated, 5 in two groups of 3
        (100, 10, 3, 0.5, 3, 3 * 10 * (5 + 2)),
        (96, 12, 4, 0.0, 4, 96),  # b = n: as many passes as the plain network
    ],
)
def test_passes_per_epoch(samples, batch_size, n, repetition, batch_repetition, expected):
    passes = _flops.passes_per_epoch(samples, batch_size, n, repetition, batch_repetition)
    assert passes == expected


def test_passes_per_sample_follow_the_formula():
    # b * (r + (1 - r) / n) per sample, up to padding of the last group.
    passes = _flops.passes_per_epoch(6000, 60, n=3, repetition=0.5, batch_repetition=2)
    assert passes / 6000 == pytest.approx(2 * (0.5 + 0.5 / 3))


def test_experiments_counter_is_the_librarys():
    from script_loader import load_script

    flops = load_script("experiments/flops.py", "agrlearn_experiments_flops")
    assert flops.forward_flops is _flops.forward_flops
    assert flops.passes_per_epoch is _flops.passes_per_epoch
    assert flops.TRAINING_PASS_COST == _flops.TRAINING_PASS_COST == 3
    model = _dense_backbone()
    forward = _flops.forward_flops(model)
    assert flops.training_flops(model, 100, 10, 2) == 3 * forward * 100 * 2
    assert flops.training_flops(model, 100, 10, 1, n=2, batch_repetition=2) == 3 * forward * 100
    assert flops.inference_flops_per_sample(model, n=2) == forward
    assert flops.inference_flops_per_sample(model, n=2, inference="group") == forward / 2
