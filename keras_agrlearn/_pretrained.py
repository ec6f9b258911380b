"""Keeping a backbone's pretrained weights in the rebuild strategy.

At `width=1.0` a rebuilt layer has the shapes of its original, except where
aggregation and the head change them, so `keep_weights` copies:

- every weight whose shape is unchanged, as it is;
- the kernel of the first channel-mixing layer (`Dense` or `Conv1D/2D/3D`
  after `Aggregate`, whose input channels grew from C to n*C): the
  pretrained kernel tiled n times along its input-channel axis and divided
  by n. A replicated sample (the same sample in all n slots) then gives the
  original pre-activation: sum over the n slots of x @ (W / n) = x @ W;
- with feature mixing (`MixedEncoders` in place of that layer), each of the
  n per-slot encoders' kernels: the pretrained kernel divided by n, and the
  bias as it is;
- a `BatchNormalization` right after `Aggregate`: every per-channel vector
  tiled n times;
- the head (n*K outputs): its kernel and bias tiled n times along the output
  axis, so each slot starts as the pretrained head.

With `n=1` the wrapped model therefore computes the backbone's function, and
with `inference="replicate"` so does a wrapped model of any n whose first
channel-mixing layer and head are of the kinds above. Any other weight is
left freshly initialised, and `looks_pretrained` decides whether `wrap`
warns about it.
"""

import keras
import numpy as np

from keras_agrlearn import _graph
from keras_agrlearn._mixed_encoders import MixedEncoders

# Layers whose kernel is (..., input channels, output channels).
_LINEAR = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
_CONSTANT_INITIALIZERS = (
    keras.initializers.Zeros,
    keras.initializers.Ones,
    keras.initializers.Constant,
)


def keep_weights(pairs, heads, n):
    """Copies the backbone's weights into their clones where shapes allow.

    Args:
        pairs: iterable of `(original, clone)` layers, clones built.
        heads: the original classification head layers.
        n: int, the number of aggregated samples.

    Returns:
        The names of the original layers with weights whose clones were left
        freshly initialised (a layer is copied whole or not at all).
    """
    head_ids = {id(head) for head in heads}
    reset = []
    for original, clone in pairs:
        if not original.weights:
            continue
        if isinstance(clone, MixedEncoders):
            if not _keep_encoders(original, clone, n):
                reset.append(original.name)
            continue
        values = None
        if len(original.weights) == len(clone.weights):
            values = [
                _kept_value(original, old, tuple(new.shape), n, id(original) in head_ids)
                for old, new in zip(original.weights, clone.weights)
            ]
        if values is None or any(value is None for value in values):
            reset.append(original.name)
            continue
        for new, value in zip(clone.weights, values):
            new.assign(value)
    return reset


def _keep_encoders(original, mixed, n):
    """Starts each of the n encoders of `mixed` from the kernel divided by n.

    The sum of the encoders, what replicate inference computes, is then the
    original layer on a sample replicated in all n slots. Returns whether the
    shapes allowed it.
    """
    kernel = keras.ops.convert_to_numpy(original.kernel)
    if any(tuple(encoder.kernel.shape) != kernel.shape for encoder in mixed.encoders):
        return False
    bias = getattr(original, "bias", None)
    if (bias is None) != (mixed.bias is None):
        return False
    for encoder in mixed.encoders:
        encoder.kernel.assign((kernel / n).astype(kernel.dtype))
    if bias is not None:
        mixed.bias.assign(keras.ops.convert_to_numpy(bias))
    return True


def _kept_value(layer, weight, shape, n, is_head):
    """The value for a clone's weight of `shape`, or None if none fits."""
    value = keras.ops.convert_to_numpy(weight)
    if value.shape == shape:
        return value
    if len(shape) != value.ndim or n == 1:
        return None
    if isinstance(layer, _LINEAR) and weight.name in ("kernel", "bias"):
        fan_out = _factor(value.shape[-1], shape[-1], n, is_head)
        if weight.name == "bias":
            return None if fan_out is None else np.tile(value, fan_out)
        if value.ndim < 2 or value.shape[:-2] != shape[:-2]:
            return None
        fan_in = _factor(value.shape[-2], shape[-2], n, True)
        if fan_in is None or fan_out is None:
            return None
        reps = (1,) * (value.ndim - 2) + (fan_in, fan_out)
        return (np.tile(value, reps) / fan_in).astype(value.dtype)
    if isinstance(layer, keras.layers.BatchNormalization) and shape == (n * value.shape[0],):
        return np.tile(value, n)
    return None


def _factor(old, new, n, allowed):
    """1 if `new == old`, n if `new == n * old` and `allowed`, else None."""
    if new == old:
        return 1
    if allowed and new == n * old:
        return n
    return None


def looks_pretrained(graph, model):
    """Whether the backbone has been trained or loaded, not freshly built.

    True when the model's optimizer has taken a step, or when a weight whose
    initializer is a constant (`"zeros"`, `"ones"`, `Constant`: most biases,
    `BatchNormalization` scales, offsets and statistics) no longer holds that
    constant. A freshly built model passes neither test, whatever its random
    seed; a trained or loaded one almost always fails the second.

    Args:
        graph: the backbone's Functional graph.
        model: the model given to `wrap` (its optimizer is read).

    Returns:
        bool.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        if int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0:
            return True
    for layer in _graph.all_layers(graph):
        if not layer.weights:
            continue
        config = layer.get_config()
        if config.get("unit_forget_bias"):
            # An LSTM's bias starts with ones for its forget gate.
            config = {k: v for k, v in config.items() if k != "bias_initializer"}
        for weight in layer.weights:
            initializer = _constant_initializer(config.get(f"{weight.name}_initializer"))
            if initializer is None:
                continue
            start = keras.ops.convert_to_numpy(initializer(tuple(weight.shape), dtype="float32"))
            value = keras.ops.convert_to_numpy(keras.ops.cast(weight, "float32"))
            if not np.array_equal(value, start):
                return True
    return False


def _constant_initializer(identifier):
    if identifier is None:
        return None
    try:
        initializer = keras.initializers.get(identifier)
    except (ValueError, TypeError):
        return None
    return initializer if isinstance(initializer, _CONSTANT_INITIALIZERS) else None


def reset_warning(model_name, reset, width):
    """The message of the warning for pretrained weights `wrap` cannot keep."""
    shown = ", ".join(f"'{name}'" for name in reset[:5])
    more = f" and {len(reset) - 5} more" if len(reset) > 5 else ""
    why = (
        f"width={width} changes their shapes; the rebuild strategy keeps "
        "pretrained weights only with width=1.0"
        if width != 1.0
        else "their shapes or kinds change when aggregated"
    )
    return (
        f"wrap(): model '{model_name}' looks pretrained (trained or loaded), but "
        f"the rebuild strategy re-initialises the weights of {len(reset)} "
        f'layer(s) ({shown}{more}): {why}. Pass strategy="stem" to keep the '
        "backbone body and all its weights."
    )
