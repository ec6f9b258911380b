"""Reading a backbone's layer graph: its Functional form, its layers and its names."""

import keras

from keras_agrlearn import _keras_internals


def is_model(layer):
    return isinstance(layer, keras.Model)


def functional_of(model):
    """The Functional graph behind a Functional or Sequential model.

    Raises:
        ValueError: for a subclassed model, or a model without inputs.
    """
    if not _keras_internals.is_functional(model):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed "
            "model, which cannot be rebuilt layer by layer; wrap() rebuilds "
            "Functional and Sequential models and wraps others with "
            "strategy='stem'."
        )
    graph = _keras_internals.graph_of(model)
    if graph is None:
        raise ValueError(
            f"Sequential model '{model.name}' has no inputs yet: start it "
            "with `keras.Input(shape)` or build it before calling wrap()."
        )
    if not graph.inputs:
        raise ValueError(f"Model '{model.name}' has no inputs; build it first.")
    return graph


def channel_axis(layer):
    """The channel axis of `layer`: 1 for a channels-first layer, else -1.

    Samples are aggregated along it, and a head's class scores lie along it.
    """
    return 1 if getattr(layer, "data_format", None) == "channels_first" else -1


def all_layers(graph):
    """The layers of `graph`, nested models replaced by their own layers."""
    for layer in graph.layers:
        if is_model(layer):
            yield from all_layers(functional_of(layer))
        else:
            yield layer


def find_layer(graph, layer_name, argument):
    """The layer named `layer_name` (None for None), for argument `argument`."""
    if layer_name is None:
        return None
    if not isinstance(layer_name, str):
        raise TypeError(
            f"Argument `{argument}` must be a layer name (str) or None, got {layer_name!r}."
        )
    for layer in all_layers(graph):
        if layer.name == layer_name:
            return layer
    names = [layer.name for layer in all_layers(graph)]
    raise ValueError(
        f"Argument `{argument}`: no layer named {layer_name!r} in the model; "
        f"its layers are {names}."
    )


def input_name(tensor):
    """The name of the input layer of the graph input `tensor`.

    A wrapped model's input takes it, so the names a Functional model shows
    for its inputs are kept; an unnamed input of a Sequential model is then
    `input_layer...`, as in the backbone's summary, not `keras_tensor...`.
    """
    return _keras_internals.producer(tensor)[0].name


def with_output_names(graph, outputs):
    """`outputs` (a replay of `graph`) under the output names of `graph`.

    Keras names a Functional model's outputs after the layers that produce
    them, and `compile(loss={...})` keys on those names. A replayed output
    keeps its name when its layer does; the output of a nested model, whose
    layers the walk inlines, is passed through an `Identity` layer that
    carries the nested model's name.
    """
    named, taken = [], set()
    for tensor, name in zip(keras.tree.flatten(outputs), graph.output_names):
        # Two outputs of one nested model share its name; a layer name is unique.
        if _keras_internals.producer(tensor)[0].name != name and name not in taken:
            tensor = keras.layers.Identity(name=name, dtype=tensor.dtype)(tensor)
        taken.add(_keras_internals.producer(tensor)[0].name)
        named.append(tensor)
    return keras.tree.pack_sequence_as(outputs, named)


def input_spec(model):
    """The `(batch_shape, dtype)` of a one-input model's input.

    Raises:
        ValueError: for several inputs, or a subclassed model that is not
            built with one input.
    """
    if _keras_internals.is_functional(model):
        graph = functional_of(model)
        if len(graph.inputs) != 1:
            raise ValueError(
                "The stem strategy supports models with one input; model "
                f"'{model.name}' has {len(graph.inputs)}. Use strategy='rebuild'."
            )
        return graph.inputs[0].shape, graph.inputs[0].dtype
    shapes = _keras_internals.built_input_shapes(model)
    if not model.built or len(shapes) != 1:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed model "
            "that is not built with one input; call it on a batch or "
            "`model.build(input_shape)` before wrap() (wrap() needs its input "
            "shape)."
        )
    shape = (None,) + tuple(next(iter(shapes.values())))[1:]
    # A subclassed model does not record its input dtype; an Embedding inside
    # tells that it takes token ids.
    if any(
        isinstance(layer, keras.layers.Embedding) for layer in _keras_internals.sublayers(model)
    ):
        return shape, "int32"
    return shape, model.compute_dtype


def subclassed_input_name(model):
    """The input name of a wrapped subclassed model, which names none itself."""
    return f"{model.name}_input"


def trace(model):
    """The Functional graph of a subclassed model's `call`, or why there is none.

    Calls `model.call` on a symbolic input, so that the layers it calls
    record a graph, as in the Functional API.

    Returns:
        `(graph, None)`, or `(None, reason)` when `call` cannot be traced.
    """
    shape, dtype = input_spec(model)
    inputs = keras.Input(batch_shape=shape, dtype=dtype, name=subclassed_input_name(model))
    # The call is the model author's code: any error it raises on a symbolic
    # input means it cannot be traced, which selects the stem strategy.
    try:
        graph = keras.Model(inputs, model.call(inputs), name=model.name)
    except Exception as error:  # noqa: BLE001
        return None, (
            f"its `call` cannot be traced on a symbolic input ({type(error).__name__}: {error})"
        )
    return graph, None
