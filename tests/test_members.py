"""`members`: the n replicated slot predictions of an AgrLearn model."""

import keras
import numpy as np
import pytest
import subclassed_models

import keras_agrlearn
from keras_agrlearn import members
from keras_agrlearn import wrap
from keras_agrlearn._members import RowsToMembers
from keras_agrlearn._members import SlotsToRows
from keras_agrlearn._members import TileSlots

CLASSES = 3


def cnn(activation="softmax"):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation=activation, name="head")(x)
    return keras.Model(inputs, outputs, name="cnn")


def subclassed():
    return subclassed_models.built(subclassed_models.Features, "features")


def two_inputs():
    image, meta = keras.Input((6, 6, 2), name="image"), keras.Input((3,), name="meta")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4)(meta)])
    return keras.Model([image, meta], keras.layers.Dense(CLASSES, activation="softmax")(x))


def hand_built(inference):
    """The README's building blocks with a Flatten between head and output."""
    inputs = keras.Input((5,))
    x, readout = keras_agrlearn.Aggregate(n=2, inference=inference)(inputs, return_readout=True)
    x = keras.layers.Dense(2 * CLASSES * 2)(x)
    x = keras_agrlearn.Deaggregate(n=2, inference=inference)(x, readout=readout)
    x = keras.layers.Reshape((CLASSES, 2))(x)
    x = keras.layers.Flatten()(keras.layers.Permute((2, 1))(x))
    return keras.Model(inputs, keras.layers.Softmax()(x))


def inputs_for(name, rng, count=7):
    if name == "two_inputs":
        return [
            rng.random((count, 6, 6, 2)).astype("float32"),
            rng.random((count, 3)).astype("float32"),
        ]
    if name == "hand_built":
        return rng.random((count, 5)).astype("float32")
    return rng.random((count, 6, 6, 2)).astype("float32")


MODELS = {
    "rebuild": lambda inference: wrap(cnn(), n=3, width=1.5, inference=inference, seed=1),
    "rebuild_logits": lambda inference: wrap(
        cnn(None), n=3, width=1.5, inference=inference, seed=1
    ),
    "stem_functional": lambda inference: wrap(
        cnn(), n=2, inference=inference, strategy="stem", seed=1
    ),
    "stem_subclassed": lambda inference: wrap(
        subclassed(), n=2, inference=inference, classes=CLASSES, seed=1
    ),
    "two_inputs": lambda inference: wrap(two_inputs(), n=2, width=1.5, inference=inference, seed=1),
    "hand_built": hand_built,
}


def built(name):
    """A fresh replicate-inference model: its random slots already differ."""
    return MODELS[name]("replicate")


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_mean_member_logits_reproduce_predict(name, rng):
    model = built(name)
    x = inputs_for(name, rng)
    outputs = members(model).predict(x, batch_size=4, verbose=0)
    n = 2 if name != "rebuild" and name != "rebuild_logits" else 3
    classes = 2 * CLASSES if name == "hand_built" else CLASSES
    assert outputs.shape == (7, n, classes)
    predicted = model.predict(x, batch_size=4, verbose=0)
    if name == "rebuild_logits":
        np.testing.assert_allclose(outputs.mean(axis=1), predicted, atol=1e-5)
    else:
        np.testing.assert_allclose(outputs.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(softmax(np.log(outputs).mean(axis=1)), predicted, atol=1e-5)
    # The members are different predictions, not n copies of one.
    assert np.abs(outputs - outputs[:, :1]).max() > 1e-4


@pytest.mark.parametrize(
    "name, inference",
    [
        ("rebuild", "group"),
        ("rebuild", "contextual"),
        ("stem_subclassed", "contextual"),
        ("hand_built", "group"),
    ],
)
def test_members_are_replicated_whatever_the_inference(name, inference, rng):
    replicate = built(name)
    other = MODELS[name](inference)
    other.set_weights(replicate.get_weights())
    x = inputs_for(name, rng)
    np.testing.assert_allclose(
        members(other).predict(x, verbose=0), members(replicate).predict(x, verbose=0), atol=1e-6
    )


def test_members_share_the_weights(rng):
    model = built("rebuild")
    view = members(model)
    x = inputs_for("rebuild", rng)
    before = view.predict(x, verbose=0)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, CLASSES, 7), verbose=0)
    after = view.predict(x, verbose=0)
    assert np.abs(after - before).max() > 1e-4
    np.testing.assert_allclose(members(model).predict(x, verbose=0), after, atol=1e-6)


def test_members_of_a_loaded_model_and_saved_members(tmp_path, rng):
    model = built("rebuild")
    x = inputs_for("rebuild", rng)
    expected = members(model).predict(x, verbose=0)
    model.save(tmp_path / "agr.keras")
    loaded = keras.models.load_model(tmp_path / "agr.keras", safe_mode=True)
    np.testing.assert_allclose(members(loaded).predict(x, verbose=0), expected, atol=1e-6)
    members(model).save(tmp_path / "members.keras")
    view = keras.models.load_model(tmp_path / "members.keras", safe_mode=True)
    np.testing.assert_allclose(view.predict(x, verbose=0), expected, atol=1e-6)


def test_members_in_training_mode_keep_their_shape(rng):
    model = built("rebuild")
    x = inputs_for("rebuild", rng)
    sampled = keras.ops.convert_to_numpy(members(model)(x, training=True))
    assert sampled.shape == (7, 3, CLASSES)
    np.testing.assert_allclose(sampled.sum(-1), 1.0, atol=1e-5)


def test_members_of_a_compiled_model_stay_uncompiled(rng):
    model = built("rebuild")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    view = members(model)
    assert not view.compiled
    assert view.name == f"{model.name}_members"


def _nested():
    wrapped = wrap(cnn(), n=2)
    return keras.Sequential([keras.Input((6, 6, 2)), wrapped])


def _mixed_n():
    """Two correctly paired branches, one with n=2 and one with n=3."""
    inputs = keras.Input((4,))
    branches = []
    for n in (2, 3):
        x, readout = keras_agrlearn.Aggregate(n=n)(inputs, return_readout=True)
        x = keras.layers.Dense(n * CLASSES)(x)
        branches.append(keras_agrlearn.Deaggregate(n=n)(x, readout=readout))
    return keras.Model(inputs, keras.layers.Average()(branches))


def _aggregate_only():
    inputs = keras.Input((4,))
    x, _ = keras_agrlearn.Aggregate(n=2)(inputs, return_readout=True)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (cnn, ValueError, r"Argument `model`: model 'cnn' has no Aggregate and Deaggregate layers"),
        (lambda: keras.layers.Dense(3), TypeError, r"Argument `model` must be a keras.Model"),
        (_nested, ValueError, r"only inside a nested model"),
        (_mixed_n, ValueError, r"use different n \(\[2, 3\]\)"),
        (_aggregate_only, ValueError, r"has no Deaggregate layer"),
    ],
    ids=["plain", "layer", "nested", "mixed_n", "aggregate_only"],
)
def test_models_without_members_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        members(make())


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (TileSlots(3), (None, 5, 2), (None, 5, 6)),
        (TileSlots(2, axis=1), (4, 3, 7), (4, 6, 7)),
        (SlotsToRows(3), (None, 6), (None, 2)),
        (SlotsToRows(2, axis=1), (4, 6, 5), (8, 3, 5)),
        (RowsToMembers(3), (None, 4), (None, 3, 4)),
        (RowsToMembers(2), (8, 4, 5), (4, 2, 4, 5)),
    ],
)
def test_member_layers_shapes_and_config(layer, shape, expected, rng):
    assert layer.compute_output_shape(shape) == expected
    concrete = tuple(12 if d is None else d for d in shape)
    values = keras.ops.convert_to_numpy(layer(rng.random(concrete).astype("float32")))
    assert values.shape == layer.compute_output_shape(concrete)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("keras_agrlearn>")
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert clone.get_config() == layer.get_config()


def test_member_layers_invert_the_slot_layout(rng):
    x = rng.random((4, 5)).astype("float32")
    tiled = keras.ops.convert_to_numpy(TileSlots(3)(x))
    np.testing.assert_array_equal(tiled, np.concatenate([x, x, x], axis=-1))
    rows = SlotsToRows(3)(keras.ops.convert_to_tensor(tiled))
    stacked = keras.ops.convert_to_numpy(RowsToMembers(3)(rows))
    np.testing.assert_array_equal(stacked, np.stack([x, x, x], axis=1))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_members_under_mixed_precision_are_float32(policy, rng):
    keras.config.set_dtype_policy(policy)
    try:
        model = built("rebuild")
        view = members(model)
    finally:
        keras.config.set_dtype_policy("float32")
    x = inputs_for("rebuild", rng)
    outputs = view.predict(x, verbose=0)
    assert outputs.dtype == np.float32 and outputs.shape == (7, 3, CLASSES)
    np.testing.assert_allclose(outputs.sum(-1), 1.0, atol=1e-6)
    predicted = model.predict(x, verbose=0)
    # The model averages the slots' half-precision logits in half precision.
    atol = {"mixed_float16": 1e-3, "mixed_bfloat16": 5e-3}[policy]
    np.testing.assert_allclose(softmax(np.log(outputs).mean(axis=1)), predicted, atol=atol)
