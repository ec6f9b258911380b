"""The stem strategy: subclassed and pretrained backbones keep their body."""

import keras
import numpy as np
import pytest
import subclassed_models

from keras_agrlearn import Aggregate
from keras_agrlearn import wrap
from keras_agrlearn._stem import STEM_NAME
from keras_agrlearn._validation import INFERENCE_MODES

CLASSES = 3


def _subclassed():
    return subclassed_models.built(subclassed_models.Features, "features")


def _functional():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="pretrained")


def _fit_and_predict(model, rng, jit_compile):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    x = rng.random((8, 6, 6, 2)).astype("float32")
    model.fit(x, rng.integers(0, CLASSES, 8), batch_size=4, epochs=1, verbose=0)
    predictions = model.predict(x, batch_size=4, verbose=0)
    assert predictions.shape == (8, CLASSES)
    np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-5)
    alone = keras.ops.convert_to_numpy(model(x[3:4], training=False))
    np.testing.assert_allclose(alone[0], predictions[3], atol=1e-5)


@pytest.mark.parametrize("inference", INFERENCE_MODES)
def test_subclassed_model_is_wrapped_with_a_stem(inference, rng, jit_compile, capsys):
    backbone = _subclassed()
    model = wrap(backbone, n=2, inference=inference, classes=CLASSES, verbose=True)
    assert "strategy='stem'" in capsys.readouterr().out
    assert model.get_layer("features") is backbone
    assert model.get_layer("agrlearn_head_slots").units == 2 * CLASSES
    if inference == "replicate":
        _fit_and_predict(model, rng, jit_compile)
    else:
        x = rng.random((5, 6, 6, 2)).astype("float32")
        assert keras.ops.convert_to_numpy(model(x, training=False)).shape == (5, CLASSES)


def test_stem_keeps_pretrained_layers_and_replaces_the_head(rng, jit_compile):
    backbone = _functional()
    model = wrap(backbone, n=2, strategy="stem")
    assert model.get_layer("conv") is backbone.get_layer("conv")
    assert model.get_layer("head_slots").units == 2 * CLASSES
    assert model.output_names == ["head"]
    _fit_and_predict(model, rng, jit_compile)


def test_frozen_backbone_trains_only_the_stem_and_the_head():
    backbone = _functional()
    backbone.trainable = False
    model = wrap(backbone, n=2, strategy="stem")
    names = sorted(weight.path.split("/")[0] for weight in model.trainable_weights)
    assert names == [STEM_NAME, "head_slots", "head_slots"]


def test_stem_starts_as_the_mean_of_the_slots(rng):
    # A replicated sample enters the pretrained body exactly as it did alone.
    model = wrap(_functional(), n=3, strategy="stem")
    stem = keras.Model(model.inputs, model.get_layer(STEM_NAME).output)
    x = rng.random((4, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stem(x, training=False)), x, atol=1e-6)


def test_verbose_names_the_rebuild_strategy(capsys):
    wrap(_functional(), n=2, verbose=True)
    out = capsys.readouterr().out
    assert "strategy='rebuild'" in out and "rebuilt layer by layer" in out


def test_quiet_by_default(capsys):
    wrap(_functional(), n=2)
    assert capsys.readouterr().out == ""


class _ChannelsFirst(keras.Model):
    """Untraceable on purpose, so wrap() takes the stem strategy."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", data_format="channels_first")
        self.pool = keras.layers.GlobalAveragePooling2D(data_format="channels_first")

    def call(self, inputs):
        if isinstance(inputs, keras.KerasTensor):
            raise TypeError("this call needs concrete tensors")
        return self.pool(self.conv(inputs))


@pytest.mark.parametrize("hint", ["argument", "config"])
def test_stem_aggregates_channels_first_data_along_axis_1(hint, rng, monkeypatch):
    backbone = _ChannelsFirst(name="features")
    backbone(np.zeros((1, 2, 6, 6), "float32"))
    if hint == "argument":
        model = wrap(backbone, n=3, classes=CLASSES, data_format="channels_first")
    else:
        monkeypatch.setattr(keras.config, "image_data_format", lambda: "channels_first")
        model = wrap(backbone, n=3, classes=CLASSES)
    (aggregate,) = [layer for layer in model.layers if isinstance(layer, Aggregate)]
    assert aggregate.axis == 1
    stem = keras.Model(model.inputs, model.get_layer(STEM_NAME).output)
    x = rng.random((4, 2, 6, 6)).astype("float32")
    # Replicated samples leave the stem as they entered it.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stem(x, training=False)), x, atol=1e-6)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, CLASSES, 4), batch_size=4, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (4, CLASSES)
