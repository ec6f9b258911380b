"""The rebuild strategy of `wrap`: replay a backbone layer by layer, widened.

Every layer of a Functional or Sequential backbone that runs on aggregated
samples or has weights is cloned from its config, its width multiplied by
`width`; `Aggregate` goes before the first layer that mixes channels and the
head gets `n * K` outputs (see `_walker.py`). At `width=1.0` the backbone's
weights are kept where shapes allow (see `_pretrained.py`); otherwise the
result has fresh weights, and `wrap` warns when the backbone looks
pretrained. Per-sample layers without trainable weights (stateful
preprocessing, a `Lambda`) are shared with the backbone as they are. The
inputs and outputs keep the backbone's names and structure.
"""

import math
import warnings

import keras

from keras_agrlearn import _graph
from keras_agrlearn import _head
from keras_agrlearn import _keras_internals
from keras_agrlearn import _pretrained
from keras_agrlearn import _walker
from keras_agrlearn._model import AgrLearnModel

# Config entries that set a layer's output width. DepthwiseConv layers have
# none: their channel count follows their input.
_WIDTH_KEYS = ("units", "filters", "output_dim", "key_dim", "value_dim")


def scaled_width(size, width):
    """The one rounding rule for widened layers: round half up, at least 1.

    The same original size always gives the same widened size, so the two
    sides of a residual `Add` or a `Concatenate` stay compatible.

    Args:
        size: int, a layer's original width (units, filters, ...).
        width: float > 0, the width multiplier.

    Returns:
        The widened size, an int >= 1.

    Example:

    >>> scaled_width(10, 1.5), scaled_width(3, 0.1)
    (15, 1)
    """
    return max(1, int(size * width + 0.5))


def aggregation_axes(model, head=None, aggregate_after=None):
    """The feature axis of each point where `rebuild_model` would aggregate.

    Builds nothing; a model with several inputs usually has several points.
    """
    graph = _graph.functional_of(model)
    heads = _head.find_heads(graph, head)
    after = _graph.find_layer(graph, aggregate_after, "aggregate_after")
    return _walker.aggregation_axes(graph, heads, after)


def rebuild_model(
    model,
    settings,
    head=None,
    aggregate_after=None,
    name=None,
    source=None,
):
    """Builds the rebuild-strategy AgrLearn model of `model` (see `wrap`).

    Args:
        model: a Functional or Sequential `keras.Model` classifier.
        settings: the model's `_settings.Settings` (`n`, `width`, the
            `Aggregate` and `Deaggregate` options, `mixing`).
        head: str, list of str or None, the head layer name(s).
        aggregate_after: str or None, the layer after which to aggregate.
        name: str or None, the new model's name.
        source: the model given to `wrap` (`model` when None), whose
            optimizer tells whether it was trained.

    Returns:
        A new, uncompiled `AgrLearnModel` taking and returning per-sample
        tensors, with the input and output names and the output structure of
        `model`. At `width=1.0` it starts from the backbone's weights where
        shapes allow (see `_pretrained.keep_weights`).

    Warns:
        UserWarning: when weights of a backbone that looks pretrained
            (`_pretrained.looks_pretrained`) are re-initialised.
    """
    graph = _graph.functional_of(model)
    heads = _head.find_heads(graph, head)
    after = _graph.find_layer(graph, aggregate_after, "aggregate_after")
    walker = Rebuilder(_walker.Aggregation(settings), heads, after)
    inputs = keras.tree.map_structure(
        lambda x: walker.tag(
            keras.Input(batch_shape=x.shape, dtype=x.dtype, name=_graph.input_name(x)),
            _walker.SAMPLE,
        ),
        graph.input,
    )
    outputs = walker.run(graph, inputs)
    for output, head_layer in zip(keras.tree.flatten(outputs), heads):
        if walker.state(output) != _walker.PREDICTED:
            raise ValueError(
                f"The classification head '{head_layer.name}' does not lead to "
                f"the output of model '{model.name}'; pass `head=` the name of "
                "the layer that produces the class scores."
            )
    outputs = _graph.with_output_names(graph, outputs)
    rebuilt = AgrLearnModel(inputs, outputs, name=name, settings=settings)
    if settings.width == 1.0:
        reset = _pretrained.keep_weights(walker.pairs.values(), heads, settings.n)
    else:
        reset = [layer.name for layer, _ in walker.pairs.values() if layer.weights]
    source = model if source is None else source
    if reset and _pretrained.looks_pretrained(graph, source):
        warnings.warn(
            _pretrained.reset_warning(source.name, reset, settings.width),
            UserWarning,
            stacklevel=3,
        )
    return rebuilt


class Rebuilder(_walker.GraphWalker):
    """Replays a graph with its layers cloned from their config and widened.

    Per-sample and post-head layers without weights are shared as they are
    (see `GraphWalker`).
    """

    def __init__(self, aggregation, heads, aggregate_after):
        super().__init__(aggregation, heads, aggregate_after)
        self.width = aggregation.settings.width
        # id(original) -> (original, clone), to copy weights once built.
        self.pairs = {}

    def clone(self, layer, **overrides):
        clone = super().clone(layer, **overrides)
        self.pairs[id(layer)] = (layer, clone)
        return clone

    def record_mixed(self, layer, mixed):
        self.pairs[id(layer)] = (layer, mixed)

    def layer_for(self, layer, args):
        if isinstance(layer, keras.layers.Reshape):
            return self.clone(layer, target_shape=_reshape_target(layer, args[0].shape))
        return self.clone(layer)

    def clone_config(self, layer):
        return widened_config(layer.get_config(), self.width)


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


def _reshape_target(layer, new_shape):
    """The target shape of `layer` (a `Reshape`) for its wider input.

    A reshape that only rearranges the axes before the channel axis and keeps
    the channel axis last is rewritten to the new channel count; one with a
    `-1` absorbs any size. Any other target is bound to the original shape.
    """
    target = tuple(layer.target_shape)
    calls = _keras_internals.call_input_shapes(layer)
    old = calls[0][1:] if len(calls) == 1 else None
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
