"""`wrap`: rebuild a Keras classifier into an AgrLearn model."""

import keras
from keras import tree

from keras_agrlearn import _validation
from keras_agrlearn.aggregate import Aggregate
from keras_agrlearn.deaggregate import Deaggregate

# Layers that act on each sample alone and never mix channels; they stay before
# `Aggregate`, so per-sample preprocessing sees the data layout it was built for.
_PER_SAMPLE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Masking,
    keras.layers.Embedding,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
)
_PREPROCESSING_MODULE = "keras.src.layers.preprocessing"

# Layers that hard-code a per-sample shape which aggregation changes.
_SHAPE_BOUND_LAYERS = (keras.layers.Reshape, keras.layers.RepeatVector)

# Config entries that set a layer's output width.
_WIDTH_KEYS = ("units", "filters", "output_dim", "key_dim", "value_dim")

_HEAD_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)

_SAMPLE, _AGGREGATED, _PREDICTED = "sample", "aggregated", "predicted"


def scaled_width(size, width):
    """The one rounding rule for widened layers: round half up, at least 1.

    The same original size always gives the same widened size, so the two
    sides of a residual `Add` or a `Concatenate` stay compatible.
    """
    return max(1, int(size * width + 0.5))


def wrap(
    model,
    n=3,
    width=1.0,
    inference="replicate",
    *,
    shuffle=False,
    repetition=0.0,
    draws=4,
    seed=None,
    head=None,
    aggregate_after=None,
    name=None,
):
    """Turns a Keras classifier into an Aggregated Learning model.

    The backbone (a Functional or Sequential model, nested models included) is
    rebuilt layer by layer into a new `keras.Model` with the same per-sample
    input and output, so every Keras loss, metric, callback and data pipeline
    works unchanged:

    - `Aggregate` goes before the first layer that mixes channels; per-sample
      preprocessing (`Rescaling`, `Normalization`, reshapes, `Embedding`, ...)
      stays per sample and keeps its state.
    - Hidden widths (`units`, `filters`, embedding and attention sizes) are
      multiplied by `width` with one rounding rule (`scaled_width`), so
      residual shapes still agree.
    - The classification head gets `n * K` outputs without activation, then
      `Deaggregate`, then the head's own activation per sample (in float32
      under mixed precision): a softmax head stays a softmax, a logits head
      stays logits.

    `n=1, width=1.0` gives the original architecture with the same number of
    parameters (freshly initialised), the natural baseline. Weights are never
    copied from the backbone, except that stateful preprocessing layers
    (`Normalization`, lookups) are shared with it as they are.

    Args:
        model: a built `keras.Model` (Functional or Sequential) with one input
            and one output.
        n: int >= 1, the number of samples aggregated per forward pass.
            Defaults to `3`.
        width: finite float > 0, the hidden width multiplier. Defaults to `1.0`.
        inference: the test protocol, `"replicate"` (each sample fills all n
            slots and the n outputs are averaged: a prediction depends on the
            sample alone), `"group"` (n test samples per forward pass: about
            n-fold throughput, but a prediction depends on its companions) or
            `"contextual"` (each sample among random companions from its batch,
            `draws` times, averaged). Defaults to `"replicate"`.
        shuffle: bool, permute each training batch before grouping, for
            pipelines that do not shuffle. Labels stay aligned. Defaults to
            `False`.
        repetition: float in `[0, 1)`, the share of training samples that fill
            all n slots of their group (MIMO-style input repetition).
            Defaults to `0.0`.
        draws: int >= 1, companion sets per sample in contextual inference.
            Defaults to `4`.
        seed: int or None, seed of the permutations and companions.
        head: str or None, the name of the classification head layer. By
            default the last `Dense` or `Conv` layer on the way to the output.
        aggregate_after: str or None, the name of the layer after which samples
            are aggregated. By default, before the first channel-mixing layer.
        name: str or None, the new model's name. Defaults to
            `"agrlearn_" + model.name`.

    Returns:
        A new, uncompiled `keras.Model` taking and returning per-sample tensors.

    Raises:
        ValueError, TypeError: for an invalid argument, a model that is not
            built, or a model whose classification head cannot be found.

    Example:

    >>> backbone = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(8, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> model = wrap(backbone, n=2, width=1.5)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> import numpy as np
    >>> x, y = np.random.rand(20, 8, 8, 1), np.random.randint(0, 10, 20)
    >>> history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> model.predict(x, verbose=0).shape
    (20, 10)
    """
    n = _validation.check_n(n)
    width = _validation.check_width(width)
    inference = _validation.check_inference(inference)
    aggregate = Aggregate(
        n,
        inference=inference,
        shuffle=shuffle,
        repetition=repetition,
        draws=draws,
        seed=seed,
    )
    graph = _functional_of(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            "wrap() supports models with one input and one output, got "
            f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs in "
            f"model '{model.name}'."
        )
    head_layer = _find_head(graph, head)
    after_layer = _find_layer(graph, aggregate_after, "aggregate_after")
    builder = _Rebuilder(aggregate, n, width, inference, head_layer, after_layer)
    old_input = graph.inputs[0]
    new_input = keras.Input(
        batch_shape=old_input.shape, dtype=old_input.dtype, name=old_input.name
    )
    builder.tag(new_input, _SAMPLE)
    output = builder.run(graph, new_input)
    if builder.state(output) != _PREDICTED:
        raise ValueError(
            f"The classification head '{head_layer.name}' does not lead to the "
            f"output of model '{model.name}'; pass `head=` the name of the layer "
            "that produces the class scores."
        )
    return keras.Model(new_input, output, name=name or f"agrlearn_{model.name}")


def _functional_of(model):
    """The Functional graph behind a Functional or Sequential model."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Functional or Sequential), "
            f"got {type(model).__name__}."
        )
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no inputs yet: start it "
                "with `keras.Input(shape)` or build it before calling wrap()."
            )
        return graph
    if not isinstance(model, keras.src.models.Functional):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed "
            "model, which cannot be rebuilt layer by layer; wrap() supports "
            "Functional and Sequential models."
        )
    if not model.inputs:
        raise ValueError(f"Model '{model.name}' has no inputs; build it first.")
    return model


def _is_model(layer):
    return isinstance(layer, keras.Model)


def _all_layers(graph):
    for layer in graph.layers:
        if _is_model(layer):
            yield from _all_layers(_functional_of(layer))
        else:
            yield layer


def _find_layer(graph, layer_name, argument):
    if layer_name is None:
        return None
    for layer in _all_layers(graph):
        if layer.name == layer_name:
            return layer
    names = [layer.name for layer in _all_layers(graph)]
    raise ValueError(
        f"Argument `{argument}`: no layer named {layer_name!r} in the model; "
        f"its layers are {names}."
    )


def _find_head(graph, head):
    """The layer that produces the class scores."""
    if head is not None:
        layer = _find_layer(graph, head, "head")
        if not isinstance(layer, _HEAD_LAYERS):
            raise ValueError(
                f"Argument `head`: layer {head!r} is a {type(layer).__name__}; "
                "the head must be a Dense, Conv1D, Conv2D or Conv3D layer."
            )
        return layer
    tensor = graph.outputs[0]
    while True:
        layer, node_index, _ = tensor._keras_history
        if _is_model(layer):
            tensor = _functional_of(layer).outputs[0]
            continue
        if isinstance(layer, _HEAD_LAYERS):
            return layer
        inputs = layer._inbound_nodes[node_index].input_tensors
        if layer.weights or len(inputs) != 1 or isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                "Could not find the classification head: the output is produced "
                f"by layer '{layer.name}' ({type(layer).__name__}), while wrap() "
                "expects a Dense or Conv layer, optionally followed by layers "
                "without weights (Activation, Softmax, Flatten, Dropout, ...). "
                "Pass `head=` the name of the layer that produces the class scores."
            )
        tensor = inputs[0]


def _widened_config(config, width):
    config = dict(config)
    for key in _WIDTH_KEYS:
        if isinstance(config.get(key), int):
            config[key] = scaled_width(config[key], width)
    for key in ("layer", "forward_layer", "backward_layer"):
        inner = config.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            config[key] = dict(inner, config=_widened_config(inner["config"], width))
    return config


def _is_per_sample(layer):
    return isinstance(layer, _PER_SAMPLE_LAYERS) or type(layer).__module__.startswith(
        _PREPROCESSING_MODULE
    )


class _Rebuilder:
    """Replays a Functional graph, tagging each tensor with its layout."""

    def __init__(self, aggregate, n, width, inference, head, aggregate_after):
        self.aggregate = aggregate
        self.n = n
        self.width = width
        self.inference = inference
        self.head = head
        self.aggregate_after = aggregate_after
        self.states = {}
        self.keep_alive = []
        self.clones = {}
        self.aggregated = {}
        self.reference = None
        self.readout = None

    def tag(self, tensors, state):
        for tensor in tree.flatten(tensors):
            self.states[id(tensor)] = state
            self.keep_alive.append(tensor)

    def state(self, tensor):
        return self.states[id(tensor)]

    def run(self, graph, inputs):
        return graph._run_through_graph(inputs, call_fn=self.visit)

    def visit(self, layer, *args, **kwargs):
        if _is_model(layer):
            return self.run(_functional_of(layer), args[0])
        tensors = [t for t in tree.flatten((args, kwargs)) if id(t) in self.states]
        states = {self.state(t) for t in tensors}
        if layer is self.head:
            return self.call_head(layer, args, kwargs)
        if states == {_PREDICTED}:
            outputs = self.clone(layer)(*args, **kwargs)
            self.tag(outputs, _PREDICTED)
            return outputs
        if states == {_SAMPLE} and self.stays_per_sample(layer):
            outputs = self.per_sample(layer)(*args, **kwargs)
            self.tag(outputs, _SAMPLE)
            if layer is self.aggregate_after:
                self.aggregate_after = "passed"
            return outputs
        if _PREDICTED in states:
            raise ValueError(
                f"Layer '{layer.name}' combines the class scores with features "
                "computed before the head; wrap() needs the head to be the last "
                "layer with weights on the way to the output."
            )
        if isinstance(layer, _SHAPE_BOUND_LAYERS):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) hard-codes a "
                "per-sample shape, which aggregation changes. Move it before the "
                "first layer that mixes channels, or aggregate after it with "
                f"`aggregate_after='{layer.name}'`."
            )
        args, kwargs = self.aggregated_inputs(layer, args, kwargs)
        outputs = self.clone(layer)(*args, **kwargs)
        self.tag(outputs, _AGGREGATED)
        return outputs

    def stays_per_sample(self, layer):
        if self.aggregate_after is None:
            return _is_per_sample(layer)
        return self.aggregate_after != "passed"

    def per_sample(self, layer):
        """Weightless or frozen-state preprocessing is shared as it is."""
        if layer.trainable_weights:
            return self.clone(layer)
        return layer

    def clone(self, layer, **overrides):
        key = id(layer)
        if key not in self.clones:
            config = _widened_config(layer.get_config(), self.width)
            config.update(overrides)
            self.clones[key] = type(layer).from_config(config)
        return self.clones[key]

    def aggregated_inputs(self, layer, args, kwargs):
        # Channels-first convolutions aggregate along axis 1, all else along -1.
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
        return tree.map_structure(
            lambda value: self.to_aggregated(value, axis), (args, kwargs)
        )

    def to_aggregated(self, value, axis):
        if id(value) not in self.states or self.state(value) != _SAMPLE:
            return value
        key = id(value)
        if key not in self.aggregated:
            if self.reference is not None and (
                self.aggregate.needs_readout or axis != self.aggregate.axis
            ):
                raise ValueError(
                    "This model needs aggregation at more than one place; that is "
                    "supported only without `shuffle`, `repetition` or contextual "
                    "inference, along one feature axis. Use `aggregate_after=` to "
                    "choose a single aggregation point."
                )
            self.aggregate.axis = axis
            if self.aggregate.needs_readout:
                aggregated, self.readout = self.aggregate(value, return_readout=True)
            else:
                aggregated = self.aggregate(value)
            self.reference = self.reference if self.reference is not None else value
            self.tag(aggregated, _AGGREGATED)
            self.aggregated[key] = aggregated
        return self.aggregated[key]

    def call_head(self, layer, args, kwargs):
        args, kwargs = self.aggregated_inputs(layer, args, kwargs)
        if self.reference is None:
            raise ValueError(
                f"The classification head '{layer.name}' is reached before any "
                "aggregation point."
            )
        config = layer.get_config()
        size_key = "units" if "units" in config else "filters"
        classes = config[size_key]
        activation = getattr(layer, "activation", None)
        scores = self.clone(layer, **{size_key: self.n * classes, "activation": "linear"})(
            *args, **kwargs
        )
        channels_first = config.get("data_format") == "channels_first"
        deaggregate = Deaggregate(
            self.n, inference=self.inference, axis=1 if channels_first else -1
        )
        if self.readout is not None:
            outputs = deaggregate(scores, readout=self.readout)
        else:
            outputs = deaggregate(scores, self.reference)
        if activation not in (None, keras.activations.linear):
            outputs = keras.layers.Activation(
                activation,
                dtype=_output_dtype(layer),
                name=f"{layer.name}_activation",
            )(outputs)
        self.tag(outputs, _PREDICTED)
        return outputs


def _output_dtype(layer):
    """Float32 for the per-sample activation under mixed precision."""
    policy = layer.dtype_policy
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return policy
