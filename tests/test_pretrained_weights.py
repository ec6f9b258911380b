"""The rebuild strategy keeps a pretrained backbone's weights, or says it cannot."""

import warnings

import keras
import numpy as np
import pytest

from keras_agrlearn import wrap


def _mlp():
    return keras.Sequential(
        [
            keras.Input((4, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(5, activation="softmax", name="head"),
        ],
        name="mlp",
    )


def _cnn():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 1, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs, name="cnn")


def _normalized_first():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(4, activation="softmax"),
        ],
        name="bn_first",
    )


def _depthwise():
    return keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.DepthwiseConv2D(3, name="dw"),
            keras.layers.Conv2D(3, 1, name="pointwise"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ],
        name="depthwise",
    )


BUILDERS = {"mlp": _mlp, "cnn": _cnn, "bn_first": _normalized_first}


def _pretend_pretrained(model, seed=0):
    """Random values in every weight: what training or loading leaves."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = rng.normal(size=tuple(weight.shape)).astype("float32")
        if "variance" in weight.name:
            value = np.abs(value) + 0.5
        values.append(value)
    model.set_weights(values)
    return model


def _inputs(model, rows=7, seed=1):
    shape = (rows,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _pretrained_warnings(record):
    return [w for w in record if "looks pretrained" in str(w.message)]


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_width_one_predicts_as_the_pretrained_backbone(kind, n):
    backbone = _pretend_pretrained(BUILDERS[kind]())
    x = _inputs(backbone)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = wrap(backbone, n=n, width=1.0, inference="replicate")
    assert not _pretrained_warnings(record)
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        backbone.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_statistics_and_unchanged_weights_are_copied():
    backbone = _pretend_pretrained(_cnn())
    model = wrap(backbone, n=3, width=1.0)
    bn = model.get_layer("bn")
    assert bn is not backbone.get_layer("bn")
    for old, new in zip(backbone.get_layer("bn").weights, bn.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old)
        )
    # The first convolution sees 3 * 2 channels: its kernel is tiled, / 3.
    kernel = keras.ops.convert_to_numpy(backbone.get_layer("conv").kernel)
    new_kernel = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
    assert new_kernel.shape == (3, 3, 6, 4)
    for slot in range(3):
        np.testing.assert_allclose(new_kernel[:, :, 2 * slot : 2 * slot + 2], kernel / 3)


def test_head_slots_start_as_the_pretrained_head():
    backbone = _pretend_pretrained(_mlp())
    model = wrap(backbone, n=3, width=1.0)
    old, new = backbone.get_layer("head"), model.get_layer("head_slots")
    assert tuple(new.kernel.shape) == (8, 15)
    kernel = keras.ops.convert_to_numpy(old.kernel)
    bias = keras.ops.convert_to_numpy(old.bias)
    for slot in range(3):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(new.kernel)[:, 5 * slot : 5 * slot + 5], kernel
        )
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(new.bias)[5 * slot : 5 * slot + 5], bias
        )


@pytest.mark.parametrize("width", [1.73, 1.5])
def test_reset_pretrained_weights_warn_naming_stem(width):
    backbone = _pretend_pretrained(_mlp())
    with pytest.warns(UserWarning, match='strategy="stem"') as record:
        wrap(backbone, n=3, width=width)
    assert "'mlp'" in str(_pretrained_warnings(record)[0].message)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_fresh_backbones_do_not_warn(kind):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        wrap(BUILDERS[kind](), n=3)
        wrap(BUILDERS[kind](), n=2, width=2.0)
    assert not _pretrained_warnings(record)


def test_fresh_lstm_does_not_warn():
    backbone = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.LSTM(3),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        wrap(backbone, n=3)
    assert not _pretrained_warnings(record)


def _without_constants():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, use_bias=False, activation="relu"),
            keras.layers.Dense(3, use_bias=False, activation="softmax"),
        ],
        name="no_bias",
    )


def test_trained_model_warns_through_its_optimizer():
    backbone = _without_constants()
    backbone.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        wrap(backbone, n=3, width=1.5)
    assert not _pretrained_warnings(record)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    backbone.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    with pytest.warns(UserWarning, match='strategy="stem"'):
        wrap(backbone, n=3, width=1.5)


def test_width_one_warns_for_layers_it_cannot_keep():
    backbone = _pretend_pretrained(_depthwise())
    with pytest.warns(UserWarning, match="'dw'") as record:
        model = wrap(backbone, n=2, width=1.0)
    message = str(_pretrained_warnings(record)[0].message)
    assert "'head'" not in message and "'pointwise'" not in message
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("head_slots").bias),
        np.tile(keras.ops.convert_to_numpy(backbone.get_layer("head").bias), 2),
    )


def test_stem_strategy_does_not_warn():
    backbone = _pretend_pretrained(_mlp())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        wrap(backbone, n=3, strategy="stem")
    assert not _pretrained_warnings(record)
