"""Which backbone layers `wrap` reuses, clones or refuses.

A layer that needs no change is used as it is, so a `Lambda` is never
deserialized; a layer whose effect on channels is unknown is refused after the
aggregation point, by name, with the options, instead of being guessed.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import Aggregate
from keras_agrlearn import scaled_width
from keras_agrlearn import wrap

CLASSES = 3


class Scale(keras.layers.Layer):
    """A custom layer without weights, unknown to wrap()."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class FirstChannel(keras.layers.Layer):
    """Keeps the first channel: on aggregated samples, the first sample's only."""

    def call(self, inputs):
        return inputs[..., :1]

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (1,)


class Projection(keras.layers.Layer):
    """A custom layer with weights that mixes all channels."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class DeclaredProjection(Projection):
    """`Projection`, declared to work on n samples stacked along its channels."""

    supports_aggregation = True


class CustomDense(keras.layers.Dense):
    """A user's subclass of a Keras layer: its `call` may differ, so it is unknown."""

    def call(self, inputs):
        return super().call(inputs)[..., :1]

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (1,)


def _classifier(*body, name="backbone"):
    inputs = keras.Input((6,))
    x = inputs
    for layer in body:
        x = layer(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def _fit_and_predict(model, rng, jit_compile):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    x = rng.random((8, 6)).astype("float32")
    history = model.fit(x, rng.integers(0, CLASSES, 8), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = model.predict(x, batch_size=4, verbose=0)
    assert predictions.shape == (8, CLASSES)
    # Replicate inference: a prediction depends on its sample alone.
    alone = keras.ops.convert_to_numpy(model(x[2:3], training=False))
    np.testing.assert_allclose(alone[0], predictions[2], atol=1e-5)


PER_SAMPLE = {
    "lambda": lambda: keras.layers.Lambda(lambda t: t * 2.0, name="unknown"),
    "custom": lambda: Scale(name="unknown"),
}


@pytest.mark.parametrize("kind", sorted(PER_SAMPLE))
def test_unknown_layer_without_weights_runs_per_sample_as_it_is(kind, rng, jit_compile):
    backbone = _classifier(PER_SAMPLE[kind]())
    model = wrap(backbone, n=2)
    assert model.get_layer("unknown") is backbone.get_layer("unknown")
    names = [layer.name for layer in model.layers]
    aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
    assert names.index("unknown") < names.index(aggregate.name) < names.index("hidden")
    _fit_and_predict(model, rng, jit_compile)


@pytest.mark.parametrize("strategy", ["rebuild", "stem"])
def test_lambda_after_the_head_is_reused(strategy, rng):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dense(CLASSES, name="logits")(x)
    backbone = keras.Model(inputs, keras.layers.Lambda(lambda t: t / 2.0, name="temperature")(x))
    model = wrap(backbone, n=2, strategy=strategy)
    assert model.get_layer("temperature") is backbone.get_layer("temperature")
    assert model.output_names == ["temperature"]
    x = rng.random((3, 6)).astype("float32")
    assert keras.ops.convert_to_numpy(model(x, training=False)).shape == (3, CLASSES)


REFUSED = {
    # Channel slicing after the aggregation point would keep slot 0 only.
    "lambda": lambda: [
        keras.layers.Dense(4, name="mix"),
        keras.layers.Lambda(lambda t: t[..., :1], name="refused"),
    ],
    "custom": lambda: [keras.layers.Dense(4, name="mix"), FirstChannel(name="refused")],
    "custom-with-weights": lambda: [Projection(4, name="refused")],
    "keras-subclass": lambda: [CustomDense(4, name="refused")],
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_unknown_layer_after_aggregation_is_refused_with_the_options(kind):
    backbone = _classifier(*REFUSED[kind]())
    with pytest.raises(ValueError) as error:
        wrap(backbone, n=2)
    message = str(error.value)
    assert message.startswith("Layer 'refused' (")
    assert "cannot tell what it does to channels" in message
    for option in (
        "`aggregate_after='refused'`",
        "strategy='stem'",
        "`supports_aggregation = True`",
    ):
        assert option in message


@pytest.mark.parametrize("option", ["aggregate_after", "strategy"])
@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_layer_is_accepted_with_each_option(kind, option, rng):
    backbone = _classifier(*REFUSED[kind]())
    if option == "aggregate_after":
        model = wrap(backbone, n=2, aggregate_after="refused")
        names = [layer.name for layer in model.layers]
        aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
        assert names.index("refused") < names.index(aggregate.name)
    else:
        model = wrap(backbone, n=2, strategy="stem")
        assert model.get_layer("refused") is backbone.get_layer("refused")
    x = rng.random((3, 6)).astype("float32")
    assert keras.ops.convert_to_numpy(model(x, training=False)).shape == (3, CLASSES)


def test_custom_layer_can_declare_that_it_supports_aggregation(rng, jit_compile):
    backbone = _classifier(DeclaredProjection(4, name="projection"))
    model = wrap(backbone, n=2, width=1.5)
    names = [layer.name for layer in model.layers]
    aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
    assert names.index(aggregate.name) < names.index("projection")
    projection = model.get_layer("projection")
    assert projection is not backbone.get_layer("projection")
    assert projection.units == scaled_width(4, 1.5)
    _fit_and_predict(model, rng, jit_compile)
