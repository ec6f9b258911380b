"""`wrap` on text, sequence, recurrent, attention and convolution backbones."""

import keras
import numpy as np
import pytest

from keras_agrlearn import Aggregate
from keras_agrlearn import scaled_width
from keras_agrlearn import wrap

CLASSES = 3
VOCABULARY = 20
STEPS = 6


def _tokens(*body):
    inputs = keras.Input((STEPS,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 4, name="embedding")(inputs)
    for layer in body:
        x = layer(x)
    return inputs, x


def _classifier(inputs, x):
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def _self_attention():
    inputs, x = _tokens()
    x = keras.layers.MultiHeadAttention(2, key_dim=4, name="attention")(x, x)
    return _classifier(inputs, keras.layers.GlobalAveragePooling1D()(x))


def _image(shape, *body):
    inputs = keras.Input(shape)
    x = inputs
    for layer in body:
        x = layer(x)
    return _classifier(inputs, x)


def _reshaped():
    # Squeeze-excitation as in EfficientNet: a Reshape bound to the channels.
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    scale = keras.layers.GlobalAveragePooling2D()(x)
    scale = keras.layers.Reshape((1, 1, 4), name="squeeze")(scale)
    x = keras.layers.Multiply()([x, scale])
    x = keras.layers.Reshape((-1, 4), name="to_sequence")(x)
    return _classifier(inputs, keras.layers.GlobalAveragePooling1D()(x))


def _recurrent():
    inputs, x = _tokens(
        keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), name="lstm"),
        keras.layers.GRU(5, return_sequences=True, name="gru"),
        keras.layers.SimpleRNN(5, name="rnn"),
    )
    return _classifier(inputs, x)


# Trained one epoch on every backend and compilation mode.
BACKBONES = {
    "embedding-conv1d": lambda: _classifier(
        *_tokens(keras.layers.Conv1D(5, 3, name="conv"), keras.layers.GlobalMaxPooling1D())
    ),
    "recurrent": _recurrent,
    "attention": _self_attention,
    "separable-depthwise-2d": lambda: _image(
        (6, 6, 2),
        keras.layers.SeparableConv2D(5, 3, name="conv"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise"),
        keras.layers.GlobalAveragePooling2D(),
    ),
    "reshape": _reshaped,
}

# Wrapped and called only: their layers share code paths with the above.
CALLED = {
    "separable-depthwise-1d": lambda: _image(
        (8, 2),
        keras.layers.SeparableConv1D(5, 3, name="conv"),
        keras.layers.DepthwiseConv1D(3, name="depthwise"),
        keras.layers.GlobalAveragePooling1D(),
    ),
    "conv3d": lambda: _image(
        (4, 4, 4, 1), keras.layers.Conv3D(5, 3, name="conv"), keras.layers.Flatten()
    ),
}

# The layer of each backbone whose size must follow `width`: (name, key, size).
WIDENED = {
    "embedding-conv1d": ("conv", "filters", 5),
    "recurrent": ("rnn", "units", 5),
    "attention": ("attention", "key_dim", 4),
    "separable-depthwise-2d": ("conv", "filters", 5),
    "reshape": ("conv", "filters", 4),
    "separable-depthwise-1d": ("conv", "filters", 5),
    "conv3d": ("conv", "filters", 5),
}


def _data(model, rng, size=8):
    shape = model.inputs[0].shape[1:]
    if model.inputs[0].dtype.startswith("int"):
        x = rng.integers(1, VOCABULARY, (size,) + shape).astype("int32")
    else:
        x = rng.random((size,) + shape).astype("float32")
    return x, rng.integers(0, CLASSES, size)


def train_and_predict(model, x, y, jit_compile):
    """One epoch, then per-sample predictions; returns them."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = model.predict(x, batch_size=4, verbose=0)
    assert predictions.shape == (len(y), CLASSES)
    np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-5)
    # Replicate inference: a prediction depends on its sample alone.
    first = keras.tree.map_structure(lambda array: array[:1], x)
    alone = keras.ops.convert_to_numpy(model(first, training=False))
    np.testing.assert_allclose(alone[0], predictions[0], atol=1e-5)
    return predictions


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_family_wraps_trains_and_predicts(family, rng, jit_compile):
    backbone = BACKBONES[family]()
    model = wrap(backbone, n=2, width=1.5)
    train_and_predict(model, *_data(backbone, rng), jit_compile)
    name, key, size = WIDENED[family]
    assert model.get_layer(name).get_config()[key] == scaled_width(size, 1.5)


@pytest.mark.parametrize("family", sorted(CALLED))
def test_family_wraps_and_predicts_per_sample(family, rng):
    backbone = CALLED[family]()
    model = wrap(backbone, n=2, width=1.5)
    x, _ = _data(backbone, rng, size=3)
    predictions = keras.ops.convert_to_numpy(model(x, training=False))
    assert predictions.shape == (3, CLASSES)
    alone = keras.ops.convert_to_numpy(model(x[1:2], training=False))
    np.testing.assert_allclose(alone[0], predictions[1], atol=1e-5)
    name, key, size = WIDENED[family]
    assert model.get_layer(name).get_config()[key] == scaled_width(size, 1.5)


@pytest.mark.parametrize("family", ["embedding-conv1d", "recurrent", "attention"])
def test_tokens_are_aggregated_after_their_embedding(family):
    model = wrap(BACKBONES[family](), n=3, width=2.0)
    aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
    # Per-sample embeddings (width 4 * 2) are concatenated along the features.
    assert aggregate.input.shape == (None, STEPS, 8)
    # With input repetition (the default) Aggregate also returns the readout.
    grouped = aggregate.output[0] if isinstance(aggregate.output, list) else aggregate.output
    assert grouped.shape[1:] == (STEPS, 24)
    assert model.get_layer("embedding").output_dim == 8


def test_recurrent_layers_are_widened_bidirectional_included():
    model = wrap(_recurrent(), n=2, width=2.0)
    lstm = model.get_layer("lstm")
    assert lstm.forward_layer.units == lstm.backward_layer.units == 10
    assert model.get_layer("gru").units == model.get_layer("rnn").units == 10


def test_depthwise_channels_follow_their_input():
    model = wrap(BACKBONES["separable-depthwise-2d"](), n=2, width=2.0)
    # SeparableConv2D: 10 filters after widening; depth_multiplier 2 doubles them.
    assert model.get_layer("depthwise").output.shape[-1] == 20


def test_reshape_bound_to_the_channels_is_adapted():
    model = wrap(_reshaped(), n=2, width=2.0)
    assert model.get_layer("squeeze").target_shape == (1, 1, 8)
    assert model.get_layer("to_sequence").target_shape == (-1, 4)


def test_reshape_that_cannot_be_adapted_is_refused_by_name():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6)(inputs)
    x = keras.layers.Reshape((2, 3), name="fixed")(x)
    model = _classifier(inputs, keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match=r"Layer 'fixed' \(Reshape to \(2, 3\)\) hard-codes"):
        wrap(model, n=2, width=2.0)


def test_aggregate_after_chooses_the_aggregation_point():
    backbone = _recurrent()
    model = wrap(backbone, n=2, width=1.0, aggregate_after="gru")
    aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
    assert aggregate.input.shape == (None, STEPS, 5)


def _two_inputs():
    image, meta = keras.Input((4, 4, 2), name="image"), keras.Input((3,), name="meta")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4)(meta)])
    return _classifier([image, meta], x)


def test_multi_input_aggregates_each_input_alike(rng, jit_compile):
    backbone = _two_inputs()
    model = wrap(backbone, n=2, width=1.5)
    x = [rng.random((8, 4, 4, 2)).astype("float32"), rng.random((8, 3)).astype("float32")]
    train_and_predict(model, x, rng.integers(0, CLASSES, 8), jit_compile)


def _two_outputs():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    kind = keras.layers.Dense(CLASSES, activation="softmax", name="kind")(x)
    size = keras.layers.Dense(2, name="size")(x)
    return keras.Model(inputs, {"kind": kind, "size": size})


def test_multi_output_gets_one_head_per_output(rng, jit_compile):
    model = wrap(_two_outputs(), n=2, width=1.5)
    assert model.get_layer("kind_slots").units == 2 * CLASSES
    assert model.get_layer("size_slots").units == 4
    model.compile(
        optimizer="adam",
        loss={"kind": "sparse_categorical_crossentropy", "size": "mse"},
        jit_compile=jit_compile,
    )
    x = rng.random((8, 6)).astype("float32")
    y = {"kind": rng.integers(0, CLASSES, 8), "size": rng.random((8, 2)).astype("float32")}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    predictions = model.predict(x, batch_size=4, verbose=0)
    assert predictions["kind"].shape == (8, CLASSES)
    assert predictions["size"].shape == (8, 2)


def test_output_without_a_head_is_explained():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2)(x), keras.layers.Add()([x, x])])
    with pytest.raises(ValueError, match=r"Could not find the classification head.*'add'"):
        wrap(model, n=2)
