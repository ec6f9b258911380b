"""Counting a model's floating-point operations from its layers.

The compute-fair study states every arm's cost in FLOPs relative to the plain
model. The counting itself lives in the library (`keras_agrlearn._flops`,
which `AgrLearnHyperModel(equal_compute=True)` uses too): a forward pass costs
two FLOPs (a multiply and an add) per kernel weight per output position of
every layer with a kernel (`Dense`, `Conv1D/2D/3D`, `DepthwiseConv`;
`SeparableConv` counts its two kernels), where the output positions are the
entries of the layer's output shape without the batch and channel axes.
Biases, activations, normalisation, pooling and the aggregation itself are
left out: on the backbones measured they are well under 1 % of the total. A
training step is counted as three forward passes (forward, and a backward
pass that costs about twice the forward), the usual convention.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> forward_flops(model)
64
"""

from keras_agrlearn._flops import TRAINING_PASS_COST
from keras_agrlearn._flops import forward_flops
from keras_agrlearn._flops import passes_per_epoch

__all__ = [
    "TRAINING_PASS_COST",
    "forward_flops",
    "inference_flops_per_sample",
    "passes_per_epoch",
    "training_flops",
]


def training_flops(model, samples, batch_size, epochs, n=1, repetition=0.0, batch_repetition=1):
    """FLOPs of `epochs` epochs of training on `samples` samples."""
    passes = passes_per_epoch(samples, batch_size, n, repetition, batch_repetition)
    return TRAINING_PASS_COST * forward_flops(model) * passes * epochs


def inference_flops_per_sample(model, n=1, inference="replicate"):
    """FLOPs to predict one sample: one pass, or 1/n of one with group inference."""
    flops = forward_flops(model)
    return flops / n if inference == "group" else flops
