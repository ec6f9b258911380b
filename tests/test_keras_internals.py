"""The private Keras API the library relies on, checked one function at a time.

Every use of Keras internals goes through keras_agrlearn/_keras_internals.py.
When a Keras upgrade moves one of them, the test named after it fails here,
before any `wrap` test fails in a less telling way.
"""

import keras
import numpy as np

from keras_agrlearn import _keras_internals


def _sequential():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="hidden"),
            keras.layers.Dense(2, name="head"),
        ]
    )


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.Sequential([keras.layers.Dense(2)])
        self.embedding = keras.layers.Embedding(5, 2)

    def call(self, inputs):
        return self.inner(inputs)


def test_is_functional():
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert _keras_internals.is_functional(functional)
    assert _keras_internals.is_functional(_sequential())
    assert not _keras_internals.is_functional(_Subclassed())


def test_graph_of():
    model = _sequential()
    graph = _keras_internals.graph_of(model)
    assert [layer.name for layer in graph.layers][-2:] == ["hidden", "head"]
    assert _keras_internals.graph_of(keras.Sequential([keras.layers.Dense(2)])) is None


def test_run_graph_calls_back_once_per_layer_in_order():
    graph = _keras_internals.graph_of(_sequential())
    calls = []

    def call_fn(layer, *args, **kwargs):
        calls.append(layer.name)
        return layer(*args, **kwargs)

    outputs = _keras_internals.run_graph(graph, [keras.Input((4,))], call_fn)
    assert calls == ["hidden", "head"]
    assert tuple(outputs.shape) == (None, 2)


def test_producer():
    model = _sequential()
    layer, inputs = _keras_internals.producer(model.outputs[0])
    assert layer.name == "head"
    assert _keras_internals.producer(inputs[0])[0].name == "hidden"


def test_call_input_shapes():
    model = _sequential()
    assert _keras_internals.call_input_shapes(model.get_layer("head")) == [(None, 3)]


def test_is_preprocessing():
    assert _keras_internals.is_preprocessing(keras.layers.Normalization())
    assert _keras_internals.is_preprocessing(keras.layers.Rescaling(0.5))
    assert not _keras_internals.is_preprocessing(keras.layers.Dense(2))


def test_built_input_shapes_and_sublayers():
    model = _Subclassed()
    assert _keras_internals.built_input_shapes(model) == {}
    model(np.zeros((1, 4), "float32"))
    shapes = _keras_internals.built_input_shapes(model)
    assert [tuple(shape) for shape in shapes.values()] == [(1, 4)]
    kinds = {type(layer).__name__ for layer in _keras_internals.sublayers(model)}
    assert {"Sequential", "Dense", "Embedding"} <= kinds


def test_is_builtin():
    class Custom(keras.layers.Dense):
        pass

    assert _keras_internals.is_builtin(keras.layers.Dense(2))
    assert _keras_internals.is_builtin(keras.layers.Lambda(lambda t: t))
    assert not _keras_internals.is_builtin(Custom(2))
