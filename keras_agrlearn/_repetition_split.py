"""Batch repetition's training step, one repetition per layer call where that is cheaper.

With batch repetition b, `Aggregate` stacks b groupings of the batch, so every
layer after it gets b times the rows. On JAX with CPU devices, XLA's time per
row grows with the rows per call (the activations leave the caches: a plain
convnet fed a 3 x larger batch takes 1.15-1.45 x three of its steps, see
docs/BENCHMARKS.md), so a step with batch repetition b would cost more than b
steps without it. There, an `AgrLearnModel` in training runs each row-wise layer
(convolutions, dense, pooling, activations, reshapes) between `Aggregate` and
`Deaggregate` b times, on one repetition's rows each. These layers treat rows
independently, so the values are those of one call up to rounding; every
other layer (batch normalization included) still sees all b repetitions at
once, so its batch statistics do not change. Other backends and devices call each layer once:
TensorFlow's and PyTorch's CPU time per row does not grow with the batch, and
accelerators prefer large calls.
"""

import functools

import keras
from keras import ops
from keras import tree

from keras_agrlearn.aggregate import Aggregate
from keras_agrlearn.deaggregate import Deaggregate

# Layers that treat every row on its own: the convolution and dense layers
# that do most of a network's work, and the reshaping, pooling and activation
# layers between them, so that consecutive ones pass their per-repetition
# parts on without putting the rows together in between.
ROW_WISE_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D", "Dense", "EinsumDense",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
        "Flatten", "Reshape", "Permute", "ZeroPadding1D", "ZeroPadding2D",
        "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
    )
)


def splits_repetitions():
    """Whether a training step now runs batch repetition one repetition per call.

    JAX with CPU devices only, and not under a `keras.distribution`: there the
    batch is sharded across devices, and parts of it would be resharded.
    """
    return _jax_on_cpu() and keras.distribution.distribution() is None


@functools.lru_cache(maxsize=None)
def _jax_on_cpu():
    if keras.backend.backend() != "jax":
        return False
    return all(
        device.lower().startswith("cpu") for device in keras.distribution.list_devices()
    )


def repetitions(model):
    """The batch repetition of `model`'s `Aggregate` layers (1 without any)."""
    return max(
        [layer.batch_repetition for layer in model.layers if isinstance(layer, Aggregate)],
        default=1,
    )


class RepetitionSplit:
    """Wraps a Functional graph's layer calls for a training step.

    Tracks which tensors carry `Aggregate`'s repeated rows (its first output,
    and every output of a layer with such an input, up to `Deaggregate`) and
    calls the row-wise layers on them `count` times, one repetition each. The
    output of such a layer is the concatenation of its parts, and the next
    row-wise layer takes the parts themselves: where no other layer reads the
    concatenation, the compiler drops it.
    """

    def __init__(self, count):
        self.count = count
        # id -> tensor: the tensors are kept so that their ids stay theirs.
        self.repeated = {}
        # id of a split layer's output -> its per-repetition parts.
        self.parts = {}

    def __call__(self, layer, call):
        if isinstance(layer, Aggregate):
            return self._aggregate(call)
        if isinstance(layer, Deaggregate):
            return call
        row_wise = isinstance(layer, ROW_WISE_LAYERS)

        def run(*args, **kwargs):
            if not self._carries(args, kwargs):
                return call(*args, **kwargs)
            if row_wise and self._splittable(args, kwargs):
                parts = self.parts.get(id(args[0]))
                if parts is None:
                    parts = ops.split(args[0], self.count, axis=0)
                parts = [call(part, **kwargs) for part in parts]
                outputs = ops.concatenate(parts, axis=0)
                self.parts[id(outputs)] = parts
            else:
                outputs = call(*args, **kwargs)
            self._mark(tree.flatten(outputs))
            return outputs

        return run

    def _aggregate(self, call):
        """`Aggregate`'s call; its first output holds the repeated rows."""

        def run(*args, **kwargs):
            outputs = call(*args, **kwargs)
            self._mark(tree.flatten(outputs)[:1])
            return outputs

        return run

    def _mark(self, tensors):
        for tensor in tensors:
            self.repeated[id(tensor)] = tensor

    def _carries(self, args, kwargs):
        return any(id(t) in self.repeated for t in tree.flatten((args, kwargs)))

    def _splittable(self, args, kwargs):
        """One tensor in (no tensor among the keyword arguments), with a
        static batch that splits evenly."""
        if len(args) != 1 or any(ops.is_tensor(t) for t in tree.flatten(kwargs)):
            return False
        batch = args[0].shape[0]
        return isinstance(batch, int) and batch % self.count == 0
