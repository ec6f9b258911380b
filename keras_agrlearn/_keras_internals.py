"""Every use of Keras' private API in the library, in one place.

`wrap` reads a backbone's layer graph, which Keras 3 exposes only in part:
`Functional` has no public name, a Sequential model keeps its graph in
`_functional`, a tensor's producing layer is in `_keras_history`, and a
subclassed model records the shape it was built with in `_build_shapes_dict`.
The graph is replayed with `_run_through_graph`, the method that the public
`keras.models.clone_model(clone_function=, call_function=)` is built on:
`clone_model` cannot start a graph from intermediate tensors (a nested
model's inputs inside the walk, the stem's projection), so the replay calls
the method itself.

`tests/test_keras_internals.py` checks each function here against the
installed Keras, so an upgrade that moves one fails there, by name, rather
than deep inside `wrap`.
"""

import keras
from keras.src.models.functional import Functional

# Keras' preprocessing layers live in this package; they run per sample with
# a state fitted to the per-sample layout (`adapt`).
PREPROCESSING_PACKAGE = "keras.src.layers.preprocessing"
# Keras' own layers, whatever public name exports them, live in this package.
KERAS_PACKAGE = "keras"


def is_functional(model):
    """Whether `model` is a Functional or Sequential model (a layer graph)."""
    return isinstance(model, (keras.Sequential, Functional))


def graph_of(model):
    """The Functional graph of a Functional model, or of a Sequential one.

    Returns None for a Sequential model without inputs yet.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model


def run_graph(graph, inputs, call_fn):
    """Replays `graph` on `inputs`, calling `call_fn(layer, *args, **kwargs)`.

    `call_fn` is called once per layer call, in topological order, with the
    replayed tensors in place of the original ones; it returns the outputs
    that stand for the layer's outputs. Returns the replayed graph outputs.
    """
    return graph._run_through_graph(inputs, call_fn=call_fn)


def producer(tensor):
    """The layer that produced the symbolic `tensor`, and that call's inputs."""
    layer, node_index, _ = tensor._keras_history
    return layer, layer._inbound_nodes[node_index].input_tensors


def call_input_shapes(layer):
    """The shape of the first input of each call of `layer` in any graph."""
    return [tuple(node.input_tensors[0].shape) for node in layer._inbound_nodes]


def is_preprocessing(layer):
    """Whether `layer` is one of Keras' preprocessing layers."""
    return type(layer).__module__.startswith(PREPROCESSING_PACKAGE)


def is_builtin(layer):
    """Whether `layer` is an instance of a class defined by Keras itself.

    A user's subclass of a Keras layer is not: its `call` may differ.
    """
    return type(layer).__module__.split(".")[0] == KERAS_PACKAGE


def built_input_shapes(model):
    """The input shapes a subclassed `model` was built with, by argument name."""
    return dict(getattr(model, "_build_shapes_dict", None) or {})


def sublayers(model):
    """Every layer inside `model`, recursively, nested models' layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))
