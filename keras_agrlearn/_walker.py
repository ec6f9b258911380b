"""Replaying a backbone's layer graph with every tensor tagged by its layout.

Both strategies of `wrap` walk a Functional graph once, in topological order,
and tag each tensor: per *sample* (before aggregation), *aggregated* (n
samples per row) or *predicted* (per-sample class scores after the head).
Per-sample layers stay before the aggregation point; the first layer that
mixes channels receives aggregated inputs; the head gets `n * K` outputs and
its scores are regrouped per sample. A layer whose effect on channels is
unknown (`supports_aggregation`) runs per sample when it has no weights, and
is refused after the aggregation point: it could slice or count channels,
which would silently drop or mix up the samples of a group. What runs in
place of each original layer is the strategy's choice (`GraphWalker`
subclasses): a widened clone (`_rebuild.py`) or the layer itself (`_stem.py`).

`aggregation_axes` walks the graph without building anything, so that `wrap`
knows the aggregation points before it settles its defaults.
"""

import keras
from keras import tree

from keras_agrlearn import _graph
from keras_agrlearn import _head
from keras_agrlearn import _keras_internals
from keras_agrlearn._aggregate import Aggregate
from keras_agrlearn._mixed_encoders import ENCODER_LAYERS
from keras_agrlearn._mixed_encoders import MixedEncoders
from keras_agrlearn._settings import Settings

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

# Keras layers that run code wrap() cannot read, a Python function or another
# framework's model: what they do to channels is unknown.
OPAQUE_LAYERS = (
    keras.layers.Lambda,
    keras.layers.TFSMLayer,
    keras.layers.TorchModuleWrapper,
    keras.layers.JaxLayer,
    keras.layers.FlaxLayer,
)

SAMPLE, AGGREGATED, PREDICTED = "sample", "aggregated", "predicted"


def supports_aggregation(layer):
    """Whether `layer` may run on n samples stacked along its channel axis.

    Keras' own layers treat every channel alike or mix them all (a `Reshape`
    is adapted by the rebuild strategy), except those in `OPAQUE_LAYERS`. Any
    other layer is unknown unless its class declares
    `supports_aggregation = True` (or `False`, to be refused).
    """
    declared = getattr(layer, "supports_aggregation", None)
    if declared is not None:
        return bool(declared)
    return _keras_internals.is_builtin(layer) and not isinstance(layer, OPAQUE_LAYERS)


def is_per_sample(layer):
    """Whether `layer` stays before the default aggregation point.

    Besides the layers known to act on each sample alone, a layer without
    weights whose effect on channels is unknown stays per sample: it runs
    there exactly as in the backbone, and it has nothing to learn from
    aggregated samples.
    """
    return (
        isinstance(layer, PER_SAMPLE_LAYERS)
        or _keras_internals.is_preprocessing(layer)
        or (not layer.weights and not supports_aggregation(layer))
    )


def _mixes_scores_error(kind, operation):
    return ValueError(
        f"{kind} '{operation.name}' combines the class scores with features "
        "computed before the head; wrap() needs the head to be the last layer "
        "with weights on the way to the output."
    )


class Aggregation:
    """How a walk aggregates samples, and what it recorded doing so.

    Reads the model's `_settings.Settings`, makes one `Aggregate` layer per
    feature axis (each aggregation point decides its axis) and records the
    first aggregated tensor (`reference`), the `readout`, which `Deaggregate`
    needs after the head, and the per-slot loss weights of a feature mixing
    layer (`slot_weights`, None without one).
    """

    def __init__(self, settings):
        self.settings = settings
        self.layers = {}
        self.reference = None
        self.readout = None
        self.slot_weights = None

    @property
    def n(self):
        return self.settings.n

    def __call__(self, value, axis):
        if axis not in self.layers:
            self.layers[axis] = Aggregate(
                self.settings.n, axis=axis, **self.settings.aggregate_options()
            )
        layer = self.layers[axis]
        if layer.needs_readout:
            aggregated, self.readout = layer(value, return_readout=True)
        else:
            aggregated = layer(value)
        if self.reference is None:
            self.reference = value
        return aggregated


class GraphWalker:
    """Replays a Functional graph, tagging each tensor with its layout.

    Subclasses choose what runs in place of each layer: `layer_for` (a layer
    on aggregated data, or per-sample with weights), `clone_config` (the
    config of a clone) and `head_overrides` (the new head's config changes).
    Layers without weights whose config needs no change are used as they are,
    never rebuilt from their config (a `Lambda` would be deserialized).

    Args:
        aggregation: the `Aggregation` to use.
        heads: the classification head layers, one per model output.
        aggregate_after: the layer after which samples are aggregated, or
            None for the first channel-mixing layer.
    """

    # Whether the layers after the aggregation point see the per-sample
    # channel count (the stem projects the aggregated samples back to it), so
    # that any layer, preprocessing or unknown, may run there.
    sees_sample_channels = False

    def __init__(self, aggregation, heads=(), aggregate_after=None):
        self.aggregation = aggregation
        self._heads = {id(head): head for head in heads}
        self._aggregate_after = aggregate_after
        self._aggregate_after_passed = False
        # Tags are keyed by id(); each entry also holds the tensor, so that
        # its id cannot be reused by a new tensor while the walk runs.
        self._tags = {}
        self._clones = {}
        self._aggregated = {}
        # ids of the tensors `Aggregate` made: their consumer mixes channels first.
        self._fresh = set()

    def tag(self, tensors, state):
        for tensor in tree.flatten(tensors):
            self._tags[id(tensor)] = (tensor, state)
        return tensors

    def state(self, tensor):
        entry = self._tags.get(id(tensor))
        return None if entry is None else entry[1]

    def run(self, graph, inputs):
        return _keras_internals.run_graph(graph, inputs, self.visit)

    def visit(self, layer, *args, **kwargs):
        if _graph.is_model(layer):
            return self.run(_graph.functional_of(layer), args[0] if len(args) == 1 else args)
        states = {self.state(t) for t in tree.flatten((args, kwargs))} - {None}
        if not isinstance(layer, keras.layers.Layer):
            return self.call_operation(layer, states, args, kwargs)
        if id(layer) in self._heads:
            if layer is self._aggregate_after:
                raise ValueError(
                    f"Argument `aggregate_after`: layer '{layer.name}' is the "
                    "classification head; aggregation must come before it."
                )
            return self.tag(self.call_head(layer, args, kwargs), PREDICTED)
        if states == {PREDICTED}:
            return self.tag(self.after_head(layer)(*args, **kwargs), PREDICTED)
        if states == {SAMPLE} and self.stays_per_sample(layer):
            outputs = self.per_sample_layer(layer, args)(*args, **kwargs)
            if layer is self._aggregate_after:
                self._aggregate_after_passed = True
            return self.tag(outputs, SAMPLE)
        if PREDICTED in states:
            raise _mixes_scores_error("Layer", layer)
        if not self.sees_sample_channels:
            _check_runs_aggregated(layer)
        args, kwargs = self.aggregated_inputs(layer, args, kwargs)
        if self.aggregation.settings.mixes and self._fresh.intersection(
            id(t) for t in tree.flatten((args, kwargs))
        ):
            return self.tag(self.mixed_encoders(layer, args, kwargs), AGGREGATED)
        return self.tag(self.layer_for(layer, args)(*args, **kwargs), AGGREGATED)

    def mixed_encoders(self, layer, args, kwargs):
        """`MixedEncoders` in place of the first channel-mixing `layer`.

        Records the slot loss weights it returns for `Deaggregate`.
        """
        settings = self.aggregation.settings
        if not isinstance(layer, ENCODER_LAYERS) or len(args) != 1 or kwargs:
            raise ValueError(
                f"Argument `mixing`: mixing={settings.mixing!r} splits the first "
                "layer after the aggregation point into per-slot encoders, which "
                "must be a Dense, Conv1D, Conv2D or Conv3D layer called on the "
                f"aggregated tensor alone; got layer '{layer.name}' "
                f"({type(layer).__name__}). Choose another aggregation point "
                "(`aggregate_after=`) or mixing='sum'."
            )
        if self.aggregation.slot_weights is not None:
            raise ValueError(
                f"Argument `mixing`: mixing={settings.mixing!r} needs one first "
                "channel-mixing layer, but the aggregated samples also reach "
                f"layer '{layer.name}'. Use mixing='sum' for this model."
            )
        mixed = MixedEncoders(
            self.encoder_template(layer),
            settings.n,
            axis=_graph.channel_axis(layer),
            name=layer.name,
            dtype=layer.dtype_policy,
            **settings.mixing_options(),
        )
        self.record_mixed(layer, mixed)
        outputs, self.aggregation.slot_weights = mixed(args[0], return_slot_weights=True)
        return outputs

    def encoder_template(self, layer):
        """The layer whose config makes each per-slot encoder of `layer`."""
        return type(layer).from_config(self.clone_config(layer))

    def record_mixed(self, layer, mixed):
        """Notes that `mixed` (a `MixedEncoders`) runs in place of `layer`."""

    def call_operation(self, operation, states, args, kwargs):
        """A `keras.ops` call recorded in a traced graph: stateless, kept as is.

        It keeps the layout of its inputs; per-sample inputs mixed with
        aggregated ones are aggregated first.
        """
        if len(states) > 1 and PREDICTED in states:
            raise _mixes_scores_error("Operation", operation)
        if len(states) > 1:
            args, kwargs = self.aggregated_inputs(operation, args, kwargs)
            states = {AGGREGATED}
        outputs = self.operation_for(operation)(*args, **kwargs)
        return self.tag(outputs, states.pop()) if states else outputs

    def operation_for(self, operation):
        return operation

    def stays_per_sample(self, layer):
        if self._aggregate_after is None:
            return is_per_sample(layer)
        return not self._aggregate_after_passed

    def per_sample_layer(self, layer, args):
        """Weightless or frozen-state preprocessing is shared as it is."""
        if layer.trainable_weights or isinstance(layer, keras.layers.Reshape):
            return self.layer_for(layer, args)
        return layer

    def layer_for(self, layer, args):
        """The layer that runs in place of `layer` on `args`."""
        raise NotImplementedError

    def clone_config(self, layer):
        """The config a clone of `layer` is made from."""
        return layer.get_config()

    def head_overrides(self):
        """Config changes of the new head besides its size and activation."""
        return {}

    def after_head(self, layer):
        """The layer that runs in place of `layer` on per-sample class scores.

        It works per sample as in the backbone: shared when it has no
        weights, else a clone, so that training leaves the backbone alone.
        """
        return self.clone(layer) if layer.weights else layer

    def clone(self, layer, **overrides):
        """A fresh copy of `layer` from its config; one per original layer."""
        key = id(layer)
        if key not in self._clones:
            config = self.clone_config(layer)
            config.update(overrides)
            self._clones[key] = type(layer).from_config(config)
        return self._clones[key]

    def aggregated_inputs(self, layer, args, kwargs):
        axis = _graph.channel_axis(layer)
        return tree.map_structure(
            lambda value: self.to_aggregated(value, axis, layer), (args, kwargs)
        )

    def to_aggregated(self, value, axis, layer):
        if self.state(value) != SAMPLE:
            return value
        key = id(value)
        if key not in self._aggregated:
            if not keras.backend.is_float_dtype(value.dtype):
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) receives "
                    f"integer inputs ({value.dtype}), which cannot be aggregated: "
                    "token ids are aggregated after their embedding. Keep the "
                    "`Embedding` before the aggregation point (`aggregate_after=` "
                    "the embedding or a later layer)."
                )
            self._aggregated[key] = self.tag(self.aggregate(value, axis), AGGREGATED)
            self._fresh.add(id(self._aggregated[key]))
        return self._aggregated[key]

    def aggregate(self, value, axis):
        """Aggregates the per-sample `value` along `axis`."""
        return self.aggregation(value, axis)

    def call_head(self, layer, args, kwargs):
        args, kwargs = self.aggregated_inputs(layer, args, kwargs)
        if self.aggregation.reference is None:
            raise ValueError(
                f"The classification head '{layer.name}' is reached before any aggregation point."
            )
        return self.new_head(layer, args, kwargs)

    def new_head(self, layer, args, kwargs):
        """The `n * K` head in place of `layer`, regrouped per sample.

        The `n * K` layer is named `<head>_slots`; the per-sample scores come
        out of a layer named like the head, as in the backbone.
        """
        settings = self.aggregation.settings
        if settings.mixes and self.aggregation.slot_weights is None:
            raise ValueError(
                f"Argument `mixing`: mixing={settings.mixing!r} mixes the features "
                "of per-slot encoders, but the classification head "
                f"'{layer.name}' is the first layer after the aggregation point. "
                "Use mixing='sum', or a backbone with a Dense or Conv layer "
                "before its head."
            )
        config = layer.get_config()
        size_key = "units" if "units" in config else "filters"
        overrides = {
            size_key: self.aggregation.n * config[size_key],
            "activation": "linear",
            "name": _head.slots_name(layer.name),
            **self.head_overrides(),
        }
        scores = self.clone(layer, **overrides)(*args, **kwargs)
        return _head.regroup(
            scores,
            self.aggregation,
            getattr(layer, "activation", None),
            _head.output_dtype(layer),
            layer.name,
            axis=_graph.channel_axis(layer),
        )


def _check_runs_aggregated(layer):
    """Refuses a layer that cannot run on aggregated samples, saying why."""
    if _keras_internals.is_preprocessing(layer):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is per-sample "
            "preprocessing with a fixed input layout and cannot run on "
            "aggregated samples; aggregate after it (`aggregate_after=`)."
        )
    if not supports_aggregation(layer):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) would run after "
            "the aggregation point, on n samples stacked along its channel "
            "axis, and wrap() cannot tell what it does to channels (it could "
            "slice or count them). Keep it per sample with "
            f"`aggregate_after='{layer.name}'` (or a later layer), keep the "
            "backbone body unchanged with strategy='stem', or, for a custom "
            "layer that treats every channel alike or mixes them all, "
            "declare the class attribute `supports_aggregation = True`."
        )


class _Probe(GraphWalker):
    """A walk that builds nothing: it records the aggregation points' axes.

    Every layer is replaced by its output spec, so no layer is made or called
    and the backbone's layers gain no new calls.
    """

    def __init__(self, heads, aggregate_after):
        super().__init__(Aggregation(Settings(n=1)), heads, aggregate_after)
        self.axes = []

    def layer_for(self, layer, args):
        return layer.compute_output_spec

    def per_sample_layer(self, layer, args):
        return layer.compute_output_spec

    def after_head(self, layer):
        return layer.compute_output_spec

    def operation_for(self, operation):
        return operation.compute_output_spec

    def aggregate(self, value, axis):
        self.axes.append(axis)
        if self.aggregation.reference is None:
            self.aggregation.reference = value
        return keras.KerasTensor(value.shape, dtype=value.dtype)

    def new_head(self, layer, args, kwargs):
        return layer.compute_output_spec(*args, **kwargs)


def aggregation_axes(graph, heads, aggregate_after=None):
    """The feature axis of each aggregation point of `graph`, in walk order."""
    probe = _Probe(heads, aggregate_after)
    inputs = tree.map_structure(
        lambda x: probe.tag(keras.KerasTensor(x.shape, dtype=x.dtype), SAMPLE),
        graph.input,
    )
    probe.run(graph, inputs)
    return probe.axes
