"""The `Deaggregate` layer: n*K outputs of a group back to one row per sample."""

import keras
from keras import ops

from keras_agrlearn import _grouping
from keras_agrlearn import _validation


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class Deaggregate(keras.layers.Layer):
    """Splits grouped outputs `(G, ..., n*K)` into per-sample rows `(G*n, ..., K)`.

    The exact inverse of the `Aggregate` layout: slot `s` of group `g` (positions
    `[s*K, (s+1)*K)` along `axis`) becomes row `g*n + s`.

    - Called as `Deaggregate(n)(y)`, it returns all `G*n` rows, the padding
      slots of a last, partial group included.
    - Called as `Deaggregate(n)(y, reference)` with the tensor that entered
      `Aggregate`, it returns exactly that tensor's B rows.
    - Called as `Deaggregate(n)(y, readout=readout)` with the readout returned
      by `Aggregate(..., return_readout=True)`, row i is the mean of the slots
      that sample i owns: this undoes a training-time permutation and averages
      repeated or contextual placements. An `Aggregate` that draws its groups
      at random (`shuffle`, `repetition`, `batch_repetition > 1`, contextual
      inference) refuses to run without `return_readout=True`, so its rows
      cannot come back misaligned. Pass either `reference` or `readout`, not
      both.

    In `"replicate"` inference (outside training) each sample owns all n slots
    of its group, and the layer returns their **mean**. It averages what it
    receives: in a model built by `wrap`, that is the head's pre-activation
    output (logits), so the per-sample activation applied afterwards sees one
    logit vector per sample. Averaging logits rather than probabilities keeps
    a logits head a logits head (`from_logits=True` losses stay valid) and, for
    a softmax head, gives the normalised geometric mean of the n slot
    probabilities.

    In training, a sample may own several slots (input repetition, batch
    repetition): `objective` says what the loss sees. With `"mean"` the row
    is the mean of the sample's slots (one prediction per sample, as in
    inference). With `"slots"` the layer returns every owned slot,
    `(B, R, ..., K)`, so that each slot's own prediction is scored, as in
    MIMO and the AgrLearn paper; `keras_agrlearn.AgrLearnModel` (what `wrap`
    returns) spreads the labels over the slots for any Keras loss.

    Args:
        n: int >= 1, the group size used by the matching `Aggregate`.
        axis: int, the axis holding the n*K grouped values. Defaults to `-1`.
        inference: `"group"`, `"replicate"` or `"contextual"`, as in the matching
            `Aggregate`. Contextual inference needs the `readout`. Defaults to
            `"group"`.
        objective: `"mean"` or `"slots"`, the training output of a sample that
            owns several slots (see above). Defaults to `"mean"`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the grouped outputs `(G, ..., n*K)`.
        reference: optional, the tensor that entered `Aggregate`.
        readout: optional int tensor `(B, R)` from `Aggregate`.
        training: bool, whether the layer runs in training mode.

    Returns:
        Per-sample outputs `(rows, ..., K)`.

    Raises:
        ValueError, TypeError: for an invalid argument, both `reference` and
            `readout`, a contextual layout without `readout`, or a grouped
            axis that is not a multiple of `n`.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import Aggregate, Deaggregate
    >>> x = np.arange(10, dtype="float32").reshape(5, 2)
    >>> y = Aggregate(n=2)(x)
    >>> keras.ops.convert_to_numpy(Deaggregate(n=2)(y, x)).tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    """

    def __init__(self, n, axis=-1, inference="group", objective="mean", **kwargs):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)
        self.axis = _validation.check_axis_type(axis)
        self.inference = _validation.check_inference(inference)
        self.objective = _validation.check_objective(objective)
        self.supports_masking = False

    def build(self, inputs_shape, reference_shape=None, readout_shape=None):
        axis = _validation.check_axis(self.axis, len(inputs_shape))
        size = inputs_shape[axis]
        if size is not None and size % self.n:
            raise ValueError(
                f"Deaggregate(n={self.n}) needs the size of axis {self.axis} to be "
                f"a multiple of n, got shape {tuple(inputs_shape)}."
            )

    def _layout(self, training, reference, readout):
        """The layout to undo; raises for contradictory or missing arguments."""
        if reference is not None and readout is not None:
            raise ValueError(
                "Deaggregate takes either `reference` (the tensor that entered "
                "Aggregate) or `readout` (from Aggregate(..., "
                "return_readout=True)), not both: the readout alone says which "
                "rows to return."
            )
        if readout is not None:
            return _grouping.GATHER
        mode = _grouping.mode_of(training, self.inference)
        layout = _grouping.layout(mode)
        if layout == _grouping.GATHER:
            raise ValueError(
                f"Deaggregate(inference={self.inference!r}) needs the `readout` "
                "returned by Aggregate(..., return_readout=True)."
            )
        return layout

    def call(self, inputs, reference=None, readout=None, training=None):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        layout = self._layout(training, reference, readout)
        if layout == _grouping.TILE:
            shape = list(ops.shape(inputs))
            k = shape[axis] // self.n
            grouped = ops.reshape(
                inputs, [-1] + shape[1:axis] + [self.n, k] + shape[axis + 1 :]
            )
            return ops.mean(grouped, axis=axis)
        slots = _grouping.groups_to_slots(inputs, self.n, axis)
        if layout == _grouping.GATHER:
            owned = ops.take(slots, readout, axis=0)
            if readout.shape[1] == 1:
                return ops.squeeze(owned, 1)
            if training and self.objective == "slots":
                return owned
            return ops.mean(owned, axis=1)
        if reference is not None:
            return slots[: _grouping.batch_size(reference)]
        return slots

    def compute_output_shape(
        self, inputs_shape, reference_shape=None, readout_shape=None, training=None
    ):
        """The output shape; its batch is known where the mode fixes it.

        Without `training`, the rows are known only when training and
        inference agree on them.
        """
        axis = _validation.check_axis(self.axis, len(inputs_shape))
        shape = list(inputs_shape)
        if shape[axis] is not None:
            shape[axis] //= self.n
        if reference_shape is not None:
            shape[0] = reference_shape[0]
        elif readout_shape is not None:
            shape[0] = readout_shape[0]
        else:
            modes = (
                ("training", self.inference) if training is None
                else (_grouping.mode_of(training, self.inference),)
            )
            rows = {self._rows(shape[0], mode) for mode in modes}
            shape[0] = rows.pop() if len(rows) == 1 else None
        return tuple(shape)

    def _rows(self, groups, mode):
        """The rows returned for `groups` groups without reference or readout."""
        if groups is None:
            return None
        layout = _grouping.layout(mode)
        if layout == _grouping.TILE:
            return groups
        if layout == _grouping.GATHER:
            return None
        return groups * self.n

    def compute_output_spec(self, inputs, reference=None, readout=None, training=None):
        self._layout(training, reference, readout)
        return keras.KerasTensor(
            self.compute_output_shape(
                inputs.shape,
                None if reference is None else reference.shape,
                None if readout is None else readout.shape,
                training=training,
            ),
            dtype=inputs.dtype,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n": self.n,
                "axis": self.axis,
                "inference": self.inference,
                "objective": self.objective,
            }
        )
        return config
