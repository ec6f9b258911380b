"""`members`: the n predictions an AgrLearn model averages, one per slot.

The layers `members` inserts keep the registered names they had in the
public module `keras_agrlearn.members` before 1.0 (`keras_agrlearn>TileSlots`,
...), so `.keras` files saved then load.
"""

import keras
from keras import ops

from keras_agrlearn import _grouping
from keras_agrlearn import _keras_internals
from keras_agrlearn import _validation
from keras_agrlearn._aggregate import Aggregate
from keras_agrlearn._deaggregate import Deaggregate


def members(model):
    """A model that returns the n member predictions of an AgrLearn model.

    In replicated inference each sample fills all n slots of its group and
    the network makes n predictions for it, one per slot: an ensemble of n
    members in one network, as in MIMO. `wrap` averages them (the logits,
    before the head's activation); this function returns them one by one.
    Member `s` is slot `s`'s prediction with the head's own activation
    applied, so a softmax head gives n probability vectors per sample and a
    logits head n logit vectors.

    The returned model shares every layer, and so every weight, with `model`
    (training `model` changes it too), takes the same per-sample inputs and
    maps a batch `(B, ...)` to `(B, n, K)`. It always replicates each sample
    into all n slots, whatever `inference` the model was built with, and
    does so in training mode too (for Monte Carlo dropout). It can be saved
    and loaded like any model built from this library's layers.

    For a model built by `wrap` with `inference="replicate"`, the head's
    activation of the mean member logits is `model.predict`: for a softmax
    head, the softmax of the mean member log-probabilities.

    Args:
        model: a Functional or Sequential `keras.Model` built by `wrap` (or by
            hand from `Aggregate` and `Deaggregate` layers), loaded from a
            `.keras` file or not.

    Returns:
        A new `keras.Model` with the inputs of `model` and, for each output of
        `model`, an output `(B, n, ...)` whose axis 1 runs over the members.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `model` has no `Aggregate` or no `Deaggregate` layer
            (it was not built by `wrap`), holds them only inside a nested
            model, is a subclassed model, or mixes layers of different `n`.

    Example:

    >>> import numpy as np
    >>> import keras_agrlearn
    >>> backbone = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(3, activation="softmax"),
    ... ])
    >>> model = keras_agrlearn.wrap(backbone, n=2)
    >>> x = np.random.rand(5, 4).astype("float32")
    >>> probs = keras_agrlearn.members(model).predict(x, verbose=0)
    >>> probs.shape
    (5, 2, 3)
    >>> mean_log = np.log(probs).mean(axis=1)
    >>> geometric = np.exp(mean_log) / np.exp(mean_log).sum(-1, keepdims=True)
    >>> bool(np.allclose(geometric, model.predict(x, verbose=0), atol=1e-5))
    True
    """
    n = agrlearn_n(model)
    if n is None:
        raise ValueError(
            f"Argument `model`: model '{model.name}' has no Aggregate and "
            "Deaggregate layers; members() needs a model built by "
            "keras_agrlearn.wrap (or by hand from Aggregate and Deaggregate)."
        )
    if not _keras_internals.is_functional(model):
        raise ValueError(
            f"Argument `model`: model '{model.name}' ({type(model).__name__}) "
            "is a subclassed model; members() rebuilds the layer graph of "
            "Functional and Sequential models, such as those built by wrap."
        )

    def call(layer, *args, **kwargs):
        if isinstance(layer, Aggregate):
            inputs = args[0] if args else kwargs["inputs"]
            tiled = TileSlots(n, axis=layer.axis, dtype=layer.dtype_policy)(inputs)
            # The readout only feeds the Deaggregate replaced below.
            return (tiled, inputs) if kwargs.get("return_readout") else tiled
        if isinstance(layer, Deaggregate):
            scores = args[0] if args else kwargs["inputs"]
            return SlotsToRows(n, axis=layer.axis, dtype=layer.dtype_policy)(scores)
        return layer(*args, **kwargs)

    # A fresh, uncompiled view of the graph: clone_model would otherwise
    # compile the clone like the original, optimizer state included.
    view = keras.Model(model.input, model.output)
    rows = keras.models.clone_model(view, clone_function=lambda layer: layer, call_function=call)
    outputs = keras.tree.map_structure(
        lambda row: RowsToMembers(n, dtype=row.dtype)(row), rows.output
    )
    return keras.Model(rows.input, outputs, name=f"{model.name}_members")


def agrlearn_n(model):
    """The `n` of an AgrLearn model, or None for a model without its layers.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if the layers are only in a nested model, or disagree on n.
    """
    _validation.check_model(model)
    found = [layer for layer in model.layers if isinstance(layer, (Aggregate, Deaggregate))]
    if not found:
        nested = [
            layer.name
            for layer in _keras_internals.sublayers(model)
            if isinstance(layer, (Aggregate, Deaggregate))
        ]
        if nested:
            raise ValueError(
                f"Argument `model`: model '{model.name}' holds AgrLearn layers "
                f"({', '.join(nested)}) only inside a nested model; pass the "
                "model built by wrap itself."
            )
        return None
    kinds = {type(layer) for layer in found}
    if kinds != {Aggregate, Deaggregate}:
        missing = "Deaggregate" if Aggregate in kinds else "Aggregate"
        raise ValueError(
            f"Argument `model`: model '{model.name}' has no {missing} layer; "
            "an AgrLearn model needs both Aggregate and Deaggregate."
        )
    sizes = sorted({layer.n for layer in found})
    if len(sizes) > 1:
        raise ValueError(
            f"Argument `model`: the Aggregate and Deaggregate layers of model "
            f"'{model.name}' use different n ({sizes}); members() needs one n."
        )
    return sizes[0]


class _SlotAxisLayer(keras.layers.Layer):
    """The `n` and `axis` arguments, checked and saved, of the two slot layers."""

    def __init__(self, n, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)
        self.axis = _validation.check_axis_type(axis)

    def get_config(self):
        config = super().get_config()
        config.update({"n": self.n, "axis": self.axis})
        return config


@keras.saving.register_keras_serializable(package="keras_agrlearn", name="TileSlots")
class TileSlots(_SlotAxisLayer):
    """Puts each sample in all n slots: `(B, ..., C)` -> `(B, ..., n*C)`.

    The replicate layout of `Aggregate`, in training and inference alike.

    Args:
        n: int >= 1, the number of slots.
        axis: int, the feature axis the slots are concatenated along.
            Defaults to `-1`.
        **kwargs: base layer keyword arguments.
    """

    def call(self, inputs):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        return _grouping.tile_groups(inputs, self.n, axis)

    def compute_output_shape(self, input_shape):
        axis = _validation.check_axis(self.axis, len(input_shape))
        shape = list(input_shape)
        if shape[axis] is not None:
            shape[axis] *= self.n
        return tuple(shape)


@keras.saving.register_keras_serializable(package="keras_agrlearn", name="SlotsToRows")
class SlotsToRows(_SlotAxisLayer):
    """Splits `(B, ..., n*K)` slot scores into member rows `(B*n, ..., K)`.

    Row `b*n + s` holds slot `s` of sample `b`, so layers after the head see
    one prediction per row, as they do after `Deaggregate`.

    Args:
        n: int >= 1, the number of slots.
        axis: int, the axis holding the n*K scores. Defaults to `-1`.
        **kwargs: base layer keyword arguments.
    """

    def call(self, inputs):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        return _grouping.groups_to_slots(inputs, self.n, axis)

    def compute_output_shape(self, input_shape):
        axis = _validation.check_axis(self.axis, len(input_shape))
        shape = list(input_shape)
        if shape[axis] is not None:
            shape[axis] //= self.n
        if shape[0] is not None:
            shape[0] *= self.n
        return tuple(shape)


@keras.saving.register_keras_serializable(package="keras_agrlearn", name="RowsToMembers")
class RowsToMembers(keras.layers.Layer):
    """Stacks member rows `(B*n, ...)` into `(B, n, ...)`.

    Args:
        n: int >= 1, the number of members per sample.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)

    def call(self, inputs):
        shape = list(ops.shape(inputs))[1:]
        return ops.reshape(inputs, [-1, self.n] + shape)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return (None if batch is None else batch // self.n, self.n) + tuple(input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"n": self.n})
        return config
