"""`AgrLearnModel`: the Keras model `wrap` returns, scoring every slot in training."""

import dataclasses

import keras
from keras import ops
from keras import tree

from keras_agrlearn._deaggregate import Deaggregate
from keras_agrlearn._settings import Settings


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class AgrLearnModel(keras.Model):
    """A Functional model whose training loss can score each slot on its own.

    An AgrLearn model takes and returns per-sample tensors, `(B, ...)` in and
    `(B, K)` out. In training, a sample can own several slots (input
    repetition puts it in all n slots of a group, batch repetition in several
    groups). A `Deaggregate(objective="slots")` layer then returns every
    owned slot, `(B, R, K)`, and this model spreads the labels over them:
    the compiled loss sees `B * R` rows, each slot's prediction with its own
    sample's label (and sample weight), so every member of the ensemble in
    one network must be right on its own, as in MIMO. Any Keras loss works,
    since it receives ordinary `(rows, K)` predictions and matching labels;
    a sample's R slots together weigh as much as one sample without
    aggregation. Training metrics are computed on the mean of each sample's
    slot predictions, one row per sample; outside training the model's
    outputs are always `(B, K)`.

    With feature mixing (`wrap(..., mixing="cut")`, a `MixedEncoders` layer
    whose slot weights reach `Deaggregate(objective="slots")`), each slot's
    loss is also weighted by its share of the mix (MixMo's reweighting): the
    model multiplies the weights that `Deaggregate` kept in the same step
    (`Deaggregate.loss_weights`) into the sample weights, which still work
    as usual.

    `settings` holds the options `wrap` settled (a frozen
    `Settings` object, saved with the model), or None for a model built by
    hand.

    Models without slot outputs behave exactly like `keras.Model`.
    `keras_agrlearn.wrap` returns this class; build one by hand like any
    Functional model, `AgrLearnModel(inputs, outputs)`.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import Aggregate, AgrLearnModel, Deaggregate
    >>> inputs = keras.Input((4,))
    >>> x, readout = Aggregate(n=2, repetition=0.5, inference="replicate")(
    ...     inputs, return_readout=True)
    >>> x = keras.layers.Dense(2 * 3)(x)
    >>> x = Deaggregate(n=2, inference="replicate", objective="slots")(
    ...     x, readout=readout)
    >>> outputs = keras.layers.Activation("softmax")(x)
    >>> model = AgrLearnModel(inputs, outputs)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> x, y = np.random.rand(12, 4), np.random.randint(0, 3, 12)
    >>> history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    >>> model.predict(x, verbose=0).shape
    (12, 3)
    """

    def __init__(self, *args, settings=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(settings, dict):
            settings = Settings(**settings)
        self._settings = settings

    @property
    def settings(self):
        """The `Settings` `wrap` built this model with, or None."""
        return self._settings

    def get_config(self):
        config = super().get_config()
        if self._settings is not None:
            config["settings"] = dataclasses.asdict(self._settings)
        return config

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        flags = self._slot_flags(y_pred)
        if any(flags):
            slots = next(pred.shape[1] for pred, flag in zip(tree.flatten(y_pred), flags) if flag)
            y = _repeat_rows(y, slots)
            sample_weight = _repeat_rows(sample_weight, slots)
            y_pred = _map_slot_outputs(y_pred, flags, _merge_slot_axis)
        weights = self._loss_weights() if training else None
        if weights is not None:
            sample_weight = _weighted(sample_weight, weights, y)
        return super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        flags = self._slot_flags(y_pred)
        if any(flags):
            y_pred = _map_slot_outputs(y_pred, flags, lambda pred: ops.mean(pred, axis=1))
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _loss_weights(self):
        """The per-row loss weights a `Deaggregate` kept in this step, or None."""
        for layer in self.layers:
            weights = getattr(layer, "loss_weights", None)
            if isinstance(layer, Deaggregate) and weights is not None:
                return weights
        return None

    def _slot_flags(self, y_pred):
        """Per output: whether it holds `(B, R, ...)` slot rows.

        Slot outputs have one axis more than the model's declared outputs.
        """
        preds = tree.flatten(y_pred)
        if len(preds) != len(self.outputs):
            return [False] * len(preds)
        return [
            len(pred.shape) == len(output.shape) + 1 for pred, output in zip(preds, self.outputs)
        ]


def _map_slot_outputs(y_pred, flags, fn):
    preds = [fn(pred) if flag else pred for pred, flag in zip(tree.flatten(y_pred), flags)]
    return tree.pack_sequence_as(y_pred, preds)


def _merge_slot_axis(pred):
    """`(B, R, ...)` -> `(B * R, ...)`: row `i * R + r` is slot r of sample i."""
    return ops.reshape(pred, [-1] + list(pred.shape[2:]))


def _weighted(sample_weight, weights, y):
    """`sample_weight` (None: ones) times the per-row `weights`, per output."""
    if sample_weight is None:
        return tree.map_structure(lambda _: weights, y)

    def scale(weight):
        weight = ops.convert_to_tensor(weight)
        rows = ops.reshape(weights, [-1] + [1] * (len(weight.shape) - 1))
        return weight * ops.cast(rows, weight.dtype)

    return tree.map_structure(scale, sample_weight)


def _repeat_rows(structure, count):
    """Each row `count` times in a row, matching `_merge_slot_axis`."""
    if structure is None:
        return None
    return tree.map_structure(lambda t: ops.repeat(t, count, axis=0), structure)
