"""The classification head: finding it, and regrouping its n*K scores.

Both strategies of `wrap` end the same way: a head with `n * K` outputs and
no activation, named `<head>_slots`, `Deaggregate`, then the head's own
activation per sample. The last of these takes the head's name, so that an
output keeps the name (`model.output_names`) that `compile` keys on.
"""

import keras

from keras_agrlearn import _graph
from keras_agrlearn import _keras_internals
from keras_agrlearn._deaggregate import Deaggregate

HEAD_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def find_heads(graph, head):
    """The layers that produce the class scores, one per model output."""
    outputs = graph.outputs
    if head is None:
        heads = [_head_of(output) for output in outputs]
        for layer, problem in heads:
            if problem is not None:
                raise ValueError(
                    f"{problem} Pass `head=` the name of the layer that produces the class scores."
                )
        return [layer for layer, _ in heads]
    names = [head] if isinstance(head, str) else head
    if not isinstance(names, (list, tuple)) or len(names) != len(outputs):
        raise ValueError(
            f"Argument `head`: the model has {len(outputs)} output(s), so `head` "
            f"must be one layer name per output ({'a str' if len(outputs) == 1 else 'a list'}), "
            f"got {head!r}."
        )
    heads = []
    for name in names:
        layer = _graph.find_layer(graph, name, "head")
        if not isinstance(layer, HEAD_LAYERS):
            raise ValueError(
                f"Argument `head`: layer {name!r} is a {type(layer).__name__}; "
                "the head must be a Dense, Conv1D, Conv2D, Conv3D, "
                "SeparableConv1D or SeparableConv2D layer."
            )
        heads.append(layer)
    return heads


def head_problem(graph):
    """Why the heads of `graph` cannot be found by default, or None."""
    for output in graph.outputs:
        _, problem = _head_of(output)
        if problem is not None:
            return problem
    return None


def _head_of(tensor):
    """`(head, None)` for the head that produces `tensor`, or `(None, problem)`."""
    while True:
        layer, inputs = _keras_internals.producer(tensor)
        if _graph.is_model(layer):
            tensor = _graph.functional_of(layer).outputs[0]
            continue
        if isinstance(layer, HEAD_LAYERS):
            return layer, None
        if (
            getattr(layer, "weights", None)
            or len(inputs) != 1
            or isinstance(layer, keras.layers.InputLayer)
        ):
            return None, (
                "Could not find the classification head: the output is "
                f"produced by layer '{layer.name}' ({type(layer).__name__}), "
                "while wrap() expects a Dense or Conv layer, optionally followed "
                "by layers without weights (Activation, Softmax, Flatten, "
                "Dropout, ...)."
            )
        tensor = inputs[0]


def slots_name(name):
    """The name of the `n * K` layer that replaces the head named `name`."""
    return f"{name}_slots"


def output_dtype(layer):
    """Float32 for the per-sample activation under mixed precision."""
    policy = layer.dtype_policy
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return policy


def regroup(scores, aggregation, activation, dtype, name, axis=-1):
    """`n * K` grouped scores back to per-sample rows, then the head's activation.

    `aggregation` is the walker's record of the aggregation point: its
    settings, the `reference` tensor and the `readout`. The
    last layer, the activation or else `Deaggregate`, is named `name`.
    """
    activated = activation not in (None, keras.activations.linear)
    settings = aggregation.settings
    deaggregate = Deaggregate(
        settings.n,
        axis=axis,
        name=None if activated else name,
        **settings.deaggregate_options(),
    )
    slot_weights = {}
    if aggregation.slot_weights is not None:
        slot_weights = {"slot_weights": aggregation.slot_weights}
    if aggregation.readout is not None:
        outputs = deaggregate(scores, readout=aggregation.readout, **slot_weights)
    else:
        outputs = deaggregate(scores, aggregation.reference, **slot_weights)
    if activated:
        outputs = keras.layers.Activation(activation, dtype=dtype, name=name)(outputs)
    return outputs
