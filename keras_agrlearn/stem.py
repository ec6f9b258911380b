"""The stem strategy of `wrap`: keep a backbone's body, aggregate in front of it.

Subclassed models cannot be rebuilt layer by layer, and rebuilding a
pretrained backbone would throw its weights away. Both are wrapped as

    inputs (B, ..., C) -> Aggregate -> (G, ..., n*C) -> stem Dense(C)
        -> backbone body (shared layers) -> new head (n*K) -> Deaggregate

so the body sees inputs with the channel count it was built for.
"""

import keras

from keras_agrlearn import _rebuild
from keras_agrlearn.model import AgrLearnModel

STEM_NAME = "agrlearn_stem"


def stem_model(
    model, aggregate, inference, head=None, classes=None, name=None, objective="mean"
):
    """Builds the stem-strategy AgrLearn model around `model` (see `wrap`).

    Args:
        model: a built `keras.Model`, Functional, Sequential or subclassed,
            with one float input whose last axis holds the channels.
        aggregate: the `Aggregate` layer to use.
        inference: the inference protocol of `aggregate`.
        head: str or None, the head layer of a Functional model; its input
            is the penultimate feature map. Defaults to the last `Dense` or
            `Conv` layer on the way to the output.
        classes: int or None, the class count of a new head on a backbone
            without one (a subclassed model). Defaults to None.
        name: str or None, the new model's name.
        objective: `"mean"` or `"slots"`, the training objective (see `wrap`).

    Returns:
        A new, uncompiled `keras.Model` taking and returning per-sample tensors.

    Raises:
        ValueError: for a model that is not built, has several inputs or
            integer inputs, or lacks `classes` where it is needed.
    """
    n = aggregate.n
    shape, dtype = _input_spec(model)
    if not keras.backend.is_float_dtype(dtype):
        raise ValueError(
            f"The stem strategy aggregates the raw inputs, but model "
            f"'{model.name}' takes {dtype} inputs (token ids?), which cannot be "
            "aggregated before their embedding. Use strategy='rebuild' with a "
            "Functional model, which aggregates after the `Embedding`."
        )
    inputs = keras.Input(batch_shape=shape, dtype=dtype, name=f"{model.name}_input")
    builder = _rebuild.Rebuilder(
        aggregate, n, 1.0, inference, [], None, reuse=True, objective=objective
    )
    projected = _project(builder.start_aggregation(inputs), shape[-1], n)
    if _rebuild.is_functional(model):
        if classes is not None:
            raise ValueError(
                "Argument `classes` is for backbones without a classification "
                f"head; model '{model.name}' has one, whose class count is kept."
            )
        graph = _rebuild.functional_of(model)
        if len(graph.outputs) != 1:
            raise ValueError(
                "The stem strategy supports models with one output; model "
                f"'{model.name}' has {len(graph.outputs)}. Use strategy='rebuild'."
            )
        builder.heads = {id(layer): layer for layer in _rebuild.find_heads(graph, head)}
        builder.tag(projected, _rebuild.AGGREGATED)
        outputs = builder.run(graph, [projected])
    else:
        if head is not None:
            raise ValueError(
                "Argument `head` names a layer of a Functional model; a "
                f"subclassed model ('{model.name}') has no layer graph to search."
            )
        outputs = _new_head(model(projected), builder, classes, model.name)
    return AgrLearnModel(inputs, outputs, name=name or f"agrlearn_{model.name}")


def _input_spec(model):
    if _rebuild.is_functional(model):
        graph = _rebuild.functional_of(model)
        if len(graph.inputs) != 1:
            raise ValueError(
                "The stem strategy supports models with one input; model "
                f"'{model.name}' has {len(graph.inputs)}. Use strategy='rebuild'."
            )
        return graph.inputs[0].shape, graph.inputs[0].dtype
    shapes = getattr(model, "_build_shapes_dict", None)
    if not model.built or not shapes or len(shapes) != 1:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed model "
            "that is not built with one input; call it on a batch or "
            "`model.build(input_shape)` before wrap() (the stem strategy needs "
            "its input shape)."
        )
    shape = tuple(next(iter(shapes.values())))
    # A subclassed model does not record its input dtype; an Embedding inside
    # tells that it takes token ids.
    layers = model._flatten_layers(include_self=False, recursive=True)
    if any(isinstance(layer, keras.layers.Embedding) for layer in layers):
        return (None,) + shape[1:], "int32"
    return (None,) + shape[1:], model.compute_dtype


def _project(aggregated, channels, n):
    """The learned `n*C -> C` projection, started as the mean of the n slots."""
    if channels is None:
        raise ValueError(
            "The stem strategy needs a known channel count (last input axis)."
        )
    projection = keras.layers.Dense(channels, use_bias=False, name=STEM_NAME)
    projected = projection(aggregated)
    projection.kernel.assign(_rebuild.stem_kernel(channels, n))
    return projected


def _new_head(features, builder, classes, model_name):
    if classes is None:
        raise ValueError(
            f"Model '{model_name}' is a subclassed model: wrap() cannot find its "
            "classification layer, so its output is taken as the features of a "
            "new head. Pass `classes=` (the number of classes), and build the "
            "model without its own classification layer."
        )
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"Argument `classes` must be an integer >= 1, got {classes!r}.")
    if len(features.shape) != 2:
        features = keras.layers.Flatten(name="agrlearn_features")(features)
    head = keras.layers.Dense(builder.n * classes, name="agrlearn_head")
    return _rebuild.regroup(
        head(features),
        builder.n,
        builder.inference,
        builder.reference,
        builder.readout,
        "softmax",
        _rebuild.output_dtype(head),
        "agrlearn_head_activation",
        objective=builder.objective,
    )
