"""The stem strategy of `wrap`: keep a backbone's body, aggregate in front of it.

Subclassed models whose `call` cannot be traced cannot be rebuilt layer by
layer, and rebuilding a pretrained backbone would throw its weights away.
Both are wrapped as

    inputs (B, ..., C) -> Aggregate -> (G, ..., n*C) -> stem projection to C
        -> backbone body (shared layers) -> new head (n*K) -> Deaggregate

so the body sees inputs with the channel count it was built for. Channels
are the last axis, or axis 1 for channels-first data.
"""

import keras
import numpy as np

from keras_agrlearn import _graph
from keras_agrlearn import _head
from keras_agrlearn import _keras_internals
from keras_agrlearn import _validation
from keras_agrlearn import _walker
from keras_agrlearn._mixed_encoders import MixedEncoders
from keras_agrlearn._model import AgrLearnModel

STEM_NAME = "agrlearn_stem"
# The new head of a backbone without one: `agrlearn_head_slots` (n * K scores)
# and `agrlearn_head`, the per-sample output.
HEAD_NAME = "agrlearn_head"
DATA_FORMATS = ("channels_last", "channels_first")


def stem_model(
    model,
    settings,
    head=None,
    classes=None,
    name=None,
    data_format=None,
    untraced=None,
):
    """Builds the stem-strategy AgrLearn model around `model` (see `wrap`).

    Args:
        model: a built `keras.Model`, Functional, Sequential or subclassed,
            with one float input.
        settings: the model's `_settings.Settings`.
        head: str or None, the head layer of a Functional model; its input
            is the penultimate feature map. Defaults to the last `Dense` or
            `Conv` layer on the way to the output.
        classes: int or None, the class count of a new head on a backbone
            without one (a subclassed model). Defaults to None.
        name: str or None, the new model's name.
        data_format: `"channels_last"`, `"channels_first"` or None, where the
            input's channels are. None means the last axis for inputs of rank
            2 and `keras.config.image_data_format()` otherwise.

    Returns:
        A new, uncompiled `AgrLearnModel` taking and returning per-sample tensors.

    Raises:
        ValueError, TypeError: for a model that is not built, has several
            inputs or integer inputs, or lacks `classes` where it is needed.
    """
    shape, dtype = _graph.input_spec(model)
    if not keras.backend.is_float_dtype(dtype):
        raise ValueError(
            f"The stem strategy aggregates the raw inputs, but model "
            f"'{model.name}' takes {dtype} inputs (token ids?), which cannot be "
            "aggregated before their embedding. Use strategy='rebuild' with a "
            "Functional model, which aggregates after the `Embedding`."
        )
    axis = input_channel_axis(len(shape), data_format)
    functional = _keras_internals.is_functional(model)
    if functional:
        if classes is not None:
            raise ValueError(
                "Argument `classes` is for backbones without a classification "
                f"head; model '{model.name}' has one, whose class count is kept."
            )
        graph = _graph.functional_of(model)
        if len(graph.outputs) != 1:
            raise ValueError(
                "The stem strategy supports models with one output; model "
                f"'{model.name}' has {len(graph.outputs)}. Use strategy='rebuild'."
            )
        heads = _head.find_heads(graph, head)
    else:
        if head is not None:
            raise ValueError(
                "Argument `head` names a layer of a Functional model; a "
                f"subclassed model ('{model.name}') has no layer graph to search."
            )
        if classes is None:
            why = f" ({untraced})" if untraced else ""
            raise ValueError(
                f"Model '{model.name}' is a subclassed model in which wrap() "
                f"cannot find a classification layer{why}, so its output is "
                "taken as the features of a new head. Pass `classes=` (the "
                "number of classes), and build the model without its own "
                "classification layer."
            )
        classes = _validation.check_classes(classes)
        heads = []
    input_name = (
        _graph.input_name(graph.inputs[0]) if functional else _graph.subclassed_input_name(model)
    )
    inputs = keras.Input(batch_shape=shape, dtype=dtype, name=input_name)
    aggregation = _walker.Aggregation(settings)
    walker = StemWalker(aggregation, heads)
    projected = walker.tag(
        _project(walker.aggregate(inputs, axis), shape[axis], aggregation, axis),
        _walker.AGGREGATED,
    )
    if functional:
        outputs = _graph.with_output_names(graph, walker.run(graph, [projected]))
    else:
        outputs = _new_head(model(projected), aggregation, classes)
    return AgrLearnModel(inputs, outputs, name=name, settings=settings)


def input_channel_axis(rank, data_format=None):
    """The channel axis of a rank-`rank` input in `data_format`: 1 or -1."""
    if data_format is None:
        data_format = "channels_last" if rank <= 2 else keras.config.image_data_format()
    _validation.check_choice("data_format", data_format, DATA_FORMATS)
    return 1 if data_format == "channels_first" and rank > 2 else -1


class StemWalker(_walker.GraphWalker):
    """Replays a graph on aggregated inputs, its layers kept as they are."""

    # The stem projects the aggregated samples back to the body's channel
    # count, so every layer of the body, preprocessing or unknown, sees the
    # layout it was built for.
    sees_sample_channels = True

    def layer_for(self, layer, args):
        return layer

    def head_overrides(self):
        # The new head learns even when the kept body is frozen.
        return {"trainable": True}


def stem_kernel(channels, n):
    """Stem projection that averages the n slots channel by channel.

    With this start, a sample in all n slots (replicate inference) reaches the
    backbone exactly as it did alone, so pretrained features stay meaningful.
    """
    return np.tile(np.eye(channels, dtype="float32") / n, (n, 1))


def _project(aggregated, channels, aggregation, axis):
    """The learned `n*C -> C` projection, started as the mean of the n slots.

    A `Dense` projects the last axis; channels-first data are projected by a
    1x1 convolution in that format. With feature mixing the projection is n
    per-slot projections (`MixedEncoders`), each started as the identity
    divided by n, whose outputs are mixed in training.
    """
    if channels is None:
        raise ValueError(f"The stem strategy needs a known channel count (input axis {axis}).")
    settings = aggregation.settings
    n = settings.n
    rank = len(aggregated.shape)
    kernel = stem_kernel(channels, n)
    if axis == -1:
        projection = keras.layers.Dense(channels, use_bias=False, name=STEM_NAME)
    else:
        convolutions = {3: keras.layers.Conv1D, 4: keras.layers.Conv2D, 5: keras.layers.Conv3D}
        if rank not in convolutions:
            raise ValueError(
                "The stem strategy projects channels-first inputs of rank 3 to 5 "
                f"(1D to 3D data), got rank {rank}."
            )
        projection = convolutions[rank](
            channels, 1, use_bias=False, data_format="channels_first", name=STEM_NAME
        )
        kernel = kernel.reshape((1,) * (rank - 2) + kernel.shape)
    if settings.mixes:
        mixed = MixedEncoders(projection, n, axis=axis, name=STEM_NAME, **settings.mixing_options())
        projected, aggregation.slot_weights = mixed(aggregated, return_slot_weights=True)
        slot_kernel = kernel[..., :channels, :]
        for encoder in mixed.encoders:
            encoder.kernel.assign(slot_kernel)
        return projected
    projected = projection(aggregated)
    projection.kernel.assign(kernel)
    return projected


def _new_head(features, aggregation, classes):
    if len(features.shape) != 2:
        features = keras.layers.Flatten(name="agrlearn_features")(features)
    head = keras.layers.Dense(aggregation.n * classes, name=_head.slots_name(HEAD_NAME))
    return _head.regroup(
        head(features), aggregation, "softmax", _head.output_dtype(head), HEAD_NAME
    )
