"""Replaying a Functional graph as an AgrLearn model (the `wrap` internals).

`wrap` walks the backbone's graph once, tagging every tensor with its layout:
per *sample* (before aggregation), *aggregated* (n samples per row) or
*predicted* (per-sample class scores after the head). Each layer is cloned
(widened) or, in the stem strategy, reused as it is.
"""

import math

import keras
import numpy as np
from keras import tree

from keras_agrlearn.deaggregate import Deaggregate

# Layers that act on each sample alone and never mix channels; they stay before
# `Aggregate`, so per-sample preprocessing sees the data layout it was built for.
PER_SAMPLE_LAYERS = (
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

# Config entries that set a layer's output width. DepthwiseConv layers have
# none: their channel count follows their input.
_WIDTH_KEYS = ("units", "filters", "output_dim", "key_dim", "value_dim")

HEAD_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)

SAMPLE, AGGREGATED, PREDICTED = "sample", "aggregated", "predicted"


class SeveralAggregationPointsError(ValueError):
    """The model needs several aggregation points, which the options rule out."""


def scaled_width(size, width):
    """The one rounding rule for widened layers: round half up, at least 1.

    The same original size always gives the same widened size, so the two
    sides of a residual `Add` or a `Concatenate` stay compatible.
    """
    return max(1, int(size * width + 0.5))


def is_model(layer):
    return isinstance(layer, keras.Model)


def is_functional(model):
    return isinstance(model, (keras.Sequential, keras.src.models.Functional))


def functional_of(model):
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
            "model, which cannot be rebuilt layer by layer; wrap() rebuilds "
            "Functional and Sequential models and wraps others with "
            "strategy='stem'."
        )
    if not model.inputs:
        raise ValueError(f"Model '{model.name}' has no inputs; build it first.")
    return model


def all_layers(graph):
    for layer in graph.layers:
        if is_model(layer):
            yield from all_layers(functional_of(layer))
        else:
            yield layer


def find_layer(graph, layer_name, argument):
    if layer_name is None:
        return None
    if not isinstance(layer_name, str):
        raise TypeError(
            f"Argument `{argument}` must be a layer name (str) or None, got "
            f"{layer_name!r}."
        )
    for layer in all_layers(graph):
        if layer.name == layer_name:
            return layer
    names = [layer.name for layer in all_layers(graph)]
    raise ValueError(
        f"Argument `{argument}`: no layer named {layer_name!r} in the model; "
        f"its layers are {names}."
    )


def find_heads(graph, head):
    """The layers that produce the class scores, one per model output."""
    outputs = graph.outputs
    if head is None:
        return [_find_head(output) for output in outputs]
    names = [head] if isinstance(head, str) else head
    if not isinstance(names, (list, tuple)) or len(names) != len(outputs):
        raise ValueError(
            f"Argument `head`: the model has {len(outputs)} output(s), so `head` "
            f"must be one layer name per output ({'a str' if len(outputs) == 1 else 'a list'}), "
            f"got {head!r}."
        )
    heads = []
    for name in names:
        layer = find_layer(graph, name, "head")
        if not isinstance(layer, HEAD_LAYERS):
            raise ValueError(
                f"Argument `head`: layer {name!r} is a {type(layer).__name__}; "
                "the head must be a Dense, Conv1D, Conv2D, Conv3D, "
                "SeparableConv1D or SeparableConv2D layer."
            )
        heads.append(layer)
    return heads


def _find_head(tensor):
    while True:
        layer, node_index, _ = tensor._keras_history
        if is_model(layer):
            tensor = functional_of(layer).outputs[0]
            continue
        if isinstance(layer, HEAD_LAYERS):
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


def widened_config(config, width):
    config = dict(config)
    for key in _WIDTH_KEYS:
        if isinstance(config.get(key), int):
            config[key] = scaled_width(config[key], width)
    for key in ("layer", "forward_layer", "backward_layer"):
        inner = config.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            # A wrapped layer is rebuilt for its new input, not its old shape.
            inner = {k: v for k, v in inner.items() if k != "build_config"}
            config[key] = dict(inner, config=widened_config(inner["config"], width))
    return config


def is_per_sample(layer):
    return isinstance(layer, PER_SAMPLE_LAYERS) or _is_preprocessing(layer)


def _is_preprocessing(layer):
    return type(layer).__module__.startswith(_PREPROCESSING_MODULE)


def _is_integer(tensor):
    return not keras.backend.is_float_dtype(tensor.dtype)


def _reshape_target(layer, new_shape):
    """The target shape of `layer` (a `Reshape`) for its wider input.

    A reshape that only rearranges the axes before the channel axis and keeps
    the channel axis last is rewritten to the new channel count; one with a
    `-1` absorbs any size. Any other target is bound to the original shape.
    """
    target = tuple(layer.target_shape)
    nodes = layer._inbound_nodes
    old = tuple(nodes[0].input_tensors[0].shape[1:]) if len(nodes) == 1 else None
    new = tuple(new_shape[1:])
    if old == new:
        return target
    if -1 in target:
        return target
    if (
        old is not None
        and old[:-1] == new[:-1]
        and None not in old
        and target[-1] == old[-1]
        and math.prod(target[:-1]) == math.prod(old[:-1])
    ):
        return target[:-1] + (new[-1],)
    raise ValueError(
        f"Layer '{layer.name}' (Reshape to {target}) hard-codes a per-sample "
        f"shape, which aggregation or `width` changes (its input is now "
        f"{new} instead of {old}). Reshapes that keep the channel axis last or "
        "use -1 are adapted; move this one before the first layer that mixes "
        f"channels, or aggregate after it with `aggregate_after='{layer.name}'`."
    )


def output_dtype(layer):
    """Float32 for the per-sample activation under mixed precision."""
    policy = layer.dtype_policy
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return policy


def regroup(
    scores, n, inference, reference, readout, activation, dtype, name, axis=-1,
    objective="mean",
):
    """`n * K` grouped scores back to per-sample rows, then the head's activation."""
    deaggregate = Deaggregate(n, inference=inference, axis=axis, objective=objective)
    if readout is not None:
        outputs = deaggregate(scores, readout=readout)
    else:
        outputs = deaggregate(scores, reference)
    if activation not in (None, keras.activations.linear):
        outputs = keras.layers.Activation(activation, dtype=dtype, name=name)(outputs)
    return outputs


def stem_kernel(channels, n):
    """Stem projection that averages the n slots channel by channel.

    With this start, a sample in all n slots (replicate inference) reaches the
    backbone exactly as it did alone, so pretrained features stay meaningful.
    """
    return np.tile(np.eye(channels, dtype="float32") / n, (n, 1))


class Rebuilder:
    """Replays a Functional graph, tagging each tensor with its layout.

    With `reuse=True` (the stem strategy) layers before the head are called as
    they are, weights included, instead of being cloned and widened.
    """

    def __init__(
        self, aggregate, n, width, inference, heads, aggregate_after, reuse=False,
        objective="mean",
    ):
        self.aggregate = aggregate
        self.objective = objective
        self.n = n
        self.width = width
        self.inference = inference
        self.heads = {id(head): head for head in heads}
        self.aggregate_after = aggregate_after
        self.reuse = reuse
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
        if is_model(layer):
            return self.run(functional_of(layer), args[0] if len(args) == 1 else args)
        tensors = [t for t in tree.flatten((args, kwargs)) if id(t) in self.states]
        states = {self.state(t) for t in tensors}
        if id(layer) in self.heads:
            if layer is self.aggregate_after:
                raise ValueError(
                    f"Argument `aggregate_after`: layer '{layer.name}' is the "
                    "classification head; aggregation must come before it."
                )
            return self.call_head(layer, args, kwargs)
        if states == {PREDICTED}:
            outputs = self.clone(layer)(*args, **kwargs)
            self.tag(outputs, PREDICTED)
            return outputs
        if states == {SAMPLE} and self.stays_per_sample(layer):
            outputs = self.per_sample(layer, args)(*args, **kwargs)
            self.tag(outputs, SAMPLE)
            if layer is self.aggregate_after:
                self.aggregate_after = "passed"
            return outputs
        if PREDICTED in states:
            raise ValueError(
                f"Layer '{layer.name}' combines the class scores with features "
                "computed before the head; wrap() needs the head to be the last "
                "layer with weights on the way to the output."
            )
        if _is_preprocessing(layer) and not self.reuse:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) is per-sample "
                "preprocessing with a fixed input layout and cannot run on "
                "aggregated samples; aggregate after it (`aggregate_after=`)."
            )
        args, kwargs = self.aggregated_inputs(layer, args, kwargs)
        outputs = self.layer_for(layer, args)(*args, **kwargs)
        self.tag(outputs, AGGREGATED)
        return outputs

    def stays_per_sample(self, layer):
        if self.aggregate_after is None:
            return is_per_sample(layer)
        return self.aggregate_after != "passed"

    def per_sample(self, layer, args):
        """Weightless or frozen-state preprocessing is shared as it is."""
        if layer.trainable_weights or isinstance(layer, keras.layers.Reshape):
            return self.layer_for(layer, args)
        return layer

    def layer_for(self, layer, args):
        if self.reuse:
            return layer
        if isinstance(layer, keras.layers.Reshape):
            return self.clone(layer, target_shape=_reshape_target(layer, args[0].shape))
        return self.clone(layer)

    def clone(self, layer, **overrides):
        key = id(layer)
        if key not in self.clones:
            config = widened_config(layer.get_config(), self.width)
            config.update(overrides)
            self.clones[key] = type(layer).from_config(config)
        return self.clones[key]

    def aggregated_inputs(self, layer, args, kwargs):
        # Channels-first convolutions aggregate along axis 1, all else along -1.
        axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1
        return tree.map_structure(
            lambda value: self.to_aggregated(value, axis, layer), (args, kwargs)
        )

    def to_aggregated(self, value, axis, layer):
        if id(value) not in self.states or self.state(value) != SAMPLE:
            return value
        key = id(value)
        if key not in self.aggregated:
            if _is_integer(value):
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) receives "
                    f"integer inputs ({value.dtype}), which cannot be aggregated: "
                    "token ids are aggregated after their embedding. Keep the "
                    "`Embedding` before the aggregation point (`aggregate_after=` "
                    "the embedding or a later layer)."
                )
            self.start_aggregation(value, axis)
            self.tag(self.aggregated[key], AGGREGATED)
        return self.aggregated[key]

    def start_aggregation(self, value, axis=-1):
        if self.reference is not None and (
            self.aggregate.needs_readout or axis != self.aggregate.axis
        ):
            raise SeveralAggregationPointsError(
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
        if self.reference is None:
            self.reference = value
        self.aggregated[id(value)] = aggregated
        return aggregated

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
        overrides = {size_key: self.n * classes, "activation": "linear"}
        if self.reuse:
            # The new head learns even when the kept body is frozen.
            overrides["trainable"] = True
        scores = self.clone(layer, **overrides)(*args, **kwargs)
        channels_first = config.get("data_format") == "channels_first"
        outputs = regroup(
            scores,
            self.n,
            self.inference,
            self.reference,
            self.readout,
            getattr(layer, "activation", None),
            output_dtype(layer),
            f"{layer.name}_activation",
            axis=1 if channels_first else -1,
            objective=self.objective,
        )
        self.tag(outputs, PREDICTED)
        return outputs
