"""Counting a model's floating-point operations from its layers.

Compute-fair comparisons (`AgrLearnHyperModel(equal_compute=True)`, the
compute-fair study in experiments/) state an AgrLearn model's cost relative to
the plain network's. A forward pass is counted analytically: every layer with
a `kernel` (`Dense`, `Conv1D/2D/3D`, `DepthwiseConv`; `SeparableConv` counts
its two kernels) costs two FLOPs (a multiply and an add) per kernel weight
per output position, where the output positions are the entries of the
layer's output shape without the batch and channel axes. The n per-slot
encoders of a `MixedEncoders` layer count as n such kernels, the same as the
one layer over n*C channels they replace; their mixing is left out. Biases,
activations, normalisation, pooling and the aggregation itself are left out:
they cost a few operations per output value, a kernel as many as its input
channels times its window. A training step is counted as
`TRAINING_PASS_COST` forward passes (forward, and a backward pass that costs
about twice the forward), the usual convention. docs/PROTOCOL.md describes
how the compute-fair study uses these counts.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> forward_flops(model)
64
>>> passes_per_epoch(100, 10, n=2)
50
"""

import math

import keras

from keras_agrlearn import _keras_internals
from keras_agrlearn._mixed_encoders import MixedEncoders

# Forward plus backward, about twice the forward.
TRAINING_PASS_COST = 3

_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def forward_flops(model):
    """FLOPs of one forward pass of `model` (one group for an AgrLearn model).

    Walks every layer, nested models included; a layer called in several
    places of a graph is counted at its first call.

    Args:
        model: a built `keras.Model` whose layers have been called on
            symbolic inputs (Functional and Sequential models, and what
            `keras_agrlearn.wrap` returns).

    Returns:
        An int, the FLOPs of one forward pass of one row of the batch.

    Raises:
        ValueError: a layer with a kernel was never called on a symbolic
            input, so its output shape is unknown.
    """
    total = 0
    layers = _keras_internals.sublayers(model)
    # A `MixedEncoders` layer counts its encoders' kernels at its own output
    # positions: the encoders run inside its call, never on symbolic inputs.
    encoders = {
        id(encoder)
        for layer in layers
        if isinstance(layer, MixedEncoders)
        for encoder in layer.encoders
    }
    for layer in layers:
        if isinstance(layer, keras.Model) or id(layer) in encoders:
            continue
        kernels = [w for w in layer.weights if w.path.split("/")[-1] in _KERNELS]
        if not kernels:
            continue
        total += 2 * _positions(layer) * sum(math.prod(w.shape) for w in kernels)
    return total


def passes_per_epoch(samples, batch_size, n=1, repetition=0.0, batch_repetition=1):
    """Groups (forward passes) one epoch feeds the network.

    Matches `Aggregate`: in each batch of `batch_size` samples (the last one
    may be smaller) a share `repetition` (rounded) fills all n slots of a
    group of its own, the rest form groups of n (the last one padded), and
    the batch is grouped `batch_repetition` times. The plain network
    (`n=1`) makes one pass per sample. Per sample, that is about
    `batch_repetition * (repetition + (1 - repetition) / n)`.

    Args:
        samples: int, training samples per epoch.
        batch_size: int, samples per batch.
        n: int, samples per group. Defaults to `1`.
        repetition: float in `[0, 1)`, the share of input repetition.
            Defaults to `0.0`.
        batch_repetition: int, groupings of each batch. Defaults to `1`.

    Returns:
        An int, the forward passes of one epoch.
    """
    total = 0
    for start in range(0, samples, batch_size):
        batch = min(batch_size, samples - start)
        repeated = int(repetition * batch + 0.5) if repetition else 0
        total += batch_repetition * (repeated + math.ceil((batch - repeated) / n))
    return total


def model_passes_per_epoch(model, samples, batch_size):
    """`passes_per_epoch` of a model, read from its settings.

    A model built by `keras_agrlearn.wrap` carries its `n`, input repetition
    and batch repetition (`model.settings`); any other model is the plain
    network, one pass per sample.

    Args:
        model: a `keras.Model`.
        samples: int, training samples per epoch.
        batch_size: int, samples per batch.

    Returns:
        An int, the forward passes of one epoch.
    """
    settings = getattr(model, "settings", None)
    if settings is None:
        return passes_per_epoch(samples, batch_size)
    return passes_per_epoch(
        samples, batch_size, settings.n, settings.repetition, settings.batch_repetition
    )


def _positions(layer):
    """Output entries per channel of `layer`'s first call, batch excluded."""
    shape = _output_shape(layer)
    return math.prod(int(d) for d in shape[1:-1]) if len(shape) > 2 else 1


def _output_shape(layer):
    output = layer.output if hasattr(layer, "output") else None
    # A layer with several outputs (`MixedEncoders` with its slot weights)
    # is counted at its first, the features.
    output = keras.tree.flatten(output)[0] if output is not None else None
    shape = output.shape if output is not None else None
    if shape is None:
        raise ValueError(f"Layer {layer.name!r} has not been called on a symbolic input.")
    return tuple(shape)
