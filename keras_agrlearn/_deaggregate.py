"""The `Deaggregate` layer: n*K outputs of a group back to one row per sample."""

import keras
from keras import ops

from keras_agrlearn import _defaults
from keras_agrlearn import _grouping
from keras_agrlearn import _settings
from keras_agrlearn import _validation


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class Deaggregate(keras.layers.Layer):
    """Splits grouped outputs `(G, ..., n*K)` into per-sample rows `(G*n, ..., K)`.

    The exact inverse of the `Aggregate` layout: slot `s` of group `g` (positions
    `[s*K, (s+1)*K)` along `axis`) becomes row `g*n + s`.

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
    - Called as `Deaggregate(n)(y)` alone, it cannot tell the B samples' rows
      from the padding slots of a last, partial group, so it raises unless
      `n=1` or the call is replicate inference (`training=False`). This is
      why a `Sequential` model cannot end in `Deaggregate`: use `wrap`, or a
      Functional model that passes the readout.

    The pair cannot be combined wrongly: when `Deaggregate` receives the
    `readout` or `reference` of an `Aggregate` (in a Functional model, or
    eagerly), it checks that both use the same `n` and `inference` and that
    its input holds n class-score blocks along `axis`, and otherwise raises
    an error that names both layers and their values. Where it cannot find
    its `Aggregate` (a `reference` cast to another dtype, for example) it
    still checks that the number of groups fits the reference's samples
    when both batch sizes are known.

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
        inference: `"replicate"`, `"group"` or `"contextual"`, as in the
            matching `Aggregate`. Contextual inference needs the `readout`.
            Defaults to `"replicate"`, as in `Aggregate` and `wrap`.
        objective: `"mean"` or `"slots"`, the training output of a sample that
            owns several slots (see above). Defaults to `"mean"`, as in
            `wrap`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Every argument after `n` is keyword-only, in the order of `Aggregate`.
    A config saved before 1.0 without `inference` loads with the default of
    then, `"group"`.

    Call arguments:
        inputs: the grouped outputs `(G, ..., n*K)`.
        reference: optional, the tensor that entered `Aggregate`.
        readout: optional int tensor `(B, R)` from `Aggregate`.
        slot_weights: optional `(G, n)` loss weights of the slots, from
            `MixedEncoders(...)(x, return_slot_weights=True)`. In training with
            `objective="slots"` the layer keeps the weights of the rows it
            returns in `loss_weights`, which `AgrLearnModel` multiplies into
            the sample weights; otherwise they are not used.
        training: bool, whether the layer runs in training mode.

    Returns:
        Per-sample outputs `(rows, ..., K)`.

    Raises:
        ValueError, TypeError: for an invalid argument, both `reference` and
            `readout`, neither of them where the rows need one, a contextual
            layout without `readout`, a grouped axis that is not a multiple of
            `n`, or an `Aggregate` whose `n` or `inference` differ.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import Aggregate, Deaggregate
    >>> x = np.arange(10, dtype="float32").reshape(5, 2)
    >>> y, readout = Aggregate(n=2)(x, training=True, return_readout=True)
    >>> rows = Deaggregate(n=2)(y, readout=readout, training=True)
    >>> keras.ops.convert_to_numpy(rows).tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    >>> Deaggregate(n=3)(y, readout=readout)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...does not match Aggregate ... n differs (3 against 2)...
    """

    def __init__(
        self,
        n,
        *,
        axis=-1,
        inference=_defaults.INFERENCE,
        objective=_defaults.OBJECTIVE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)
        self.axis = _validation.check_axis_type(axis)
        self.inference = _validation.check_inference(inference)
        self.objective = _validation.check_objective(objective)
        self.supports_masking = False
        # The per-row loss weights of the last call (see `loss_weights`).
        self._loss_weights = None

    @property
    def loss_weights(self):
        """The per-row loss weights of the last call, or None.

        Set by a training call with `objective="slots"` that received
        `slot_weights`: one weight per row the loss scores (`(B * R,)` in the
        order of `AgrLearnModel`'s rows), read by `AgrLearnModel.compute_loss`
        in the same step. None after any other call.
        """
        return self._loss_weights

    def build(
        self, inputs_shape, reference_shape=None, readout_shape=None, slot_weights_shape=None
    ):
        _validation.check_axis(self.axis, len(inputs_shape))

    def _layout(self, inputs, reference, readout, modes):
        """The layout to undo in `modes`, after checking the call.

        Raises for contradictory or missing arguments, an `Aggregate` with
        other settings, or rows that cannot belong to the reference. Returns
        None where the modes disagree (a symbolic call).
        """
        if reference is not None and readout is not None:
            raise ValueError(
                "Deaggregate takes either `reference` (the tensor that entered "
                "Aggregate) or `readout` (from Aggregate(..., "
                "return_readout=True)), not both: the readout alone says which "
                "rows to return."
            )
        self._check_aggregate(reference, readout)
        self._check_width(inputs.shape)
        if readout is not None:
            return _grouping.GATHER
        layouts = {_grouping.layout(mode) for mode in modes}
        if _grouping.GATHER in layouts:
            raise ValueError(
                f"{self._describe()} needs the `readout` returned by "
                "Aggregate(..., return_readout=True) for contextual inference."
            )
        if reference is None and self.n > 1 and layouts != {_grouping.TILE}:
            raise ValueError(
                f"{self._describe()} was called without `readout` or "
                "`reference`, so it cannot tell the samples' rows from the "
                "slots that complete a last, partial group (a Sequential model "
                "passes one tensor only). Use `keras_agrlearn.wrap(model, ...)`, "
                "or a Functional model: `x, readout = Aggregate(...)(inputs, "
                "return_readout=True)` ... `Deaggregate(...)(y, "
                "readout=readout)`."
            )
        if reference is not None:
            self._check_rows(inputs.shape[0], reference.shape[0], modes)
        return layouts.pop() if len(layouts) == 1 else None

    def _check_aggregate(self, reference, readout):
        """Raises unless the `Aggregate` behind the readout or reference agrees."""
        source, role = (readout, "readout") if readout is not None else (reference, "input")
        if source is None:
            return
        aggregates = _grouping.aggregates_of(source)
        if not aggregates or any(self._agrees(a) for a in aggregates):
            return
        aggregate = aggregates[0]
        differences = [
            f"{name} differs ({mine!r} against {theirs!r})"
            for name, mine, theirs in [
                ("n", self.n, aggregate.n),
                ("inference", self.inference, aggregate.inference),
            ]
            if mine != theirs
        ]
        raise ValueError(
            f"{self._describe()} does not match {_describe_aggregate(aggregate)}, "
            f"whose {role} it receives: {'; '.join(differences)}. Give both "
            "layers the same n and inference."
        )

    def _agrees(self, aggregate):
        return aggregate.n == self.n and aggregate.inference == self.inference

    def _check_width(self, inputs_shape):
        axis = _validation.check_axis(self.axis, len(inputs_shape))
        size = inputs_shape[axis]
        if size is not None and size % self.n:
            raise ValueError(
                f"{self._describe()} needs the size of axis {self.axis} to be a "
                f"multiple of n: n blocks of class scores, one per slot of the "
                f"n={self.n} samples of a group (the layer before it needs "
                f"n * classes units); got shape {tuple(inputs_shape)}."
            )

    def _check_rows(self, groups, batch, modes):
        """Raises if `groups` rows cannot come from `batch` samples in `modes`.

        Only where both batch sizes are known statically (eager calls, JAX and
        PyTorch traces); the readout or reference check above covers the rest.
        A symbolic call builds for training and inference alike, and passes
        when either fits.
        """
        if not (isinstance(groups, int) and isinstance(batch, int)):
            return
        expected = {mode: _grouping.grouped_batch(batch, self.n, mode) for mode in modes}
        if groups in expected.values():
            return
        counts = " or ".join(f"{count} in {mode}" for mode, count in expected.items())
        raise ValueError(
            f"{self._describe()} received {groups} groups for the {batch} "
            f"samples of `reference`, while its n and inference make {counts}: "
            "the Aggregate before it uses another n or inference. Give both "
            "layers the same n and inference."
        )

    def _describe(self):
        return f"Deaggregate '{self.name}' (n={self.n}, inference={self.inference!r})"

    def call(self, inputs, reference=None, readout=None, slot_weights=None, training=None):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        mode = _grouping.mode_of(training, self.inference)
        layout = self._layout(inputs, reference, readout, (mode,))
        self._loss_weights = None
        if training and self.objective == "slots" and slot_weights is not None:
            self._loss_weights = _rows_weights(slot_weights, layout, reference, readout)
        if layout == _grouping.TILE:
            shape = list(ops.shape(inputs))
            k = shape[axis] // self.n
            grouped = ops.reshape(inputs, [-1] + shape[1:axis] + [self.n, k] + shape[axis + 1 :])
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
        self,
        inputs_shape,
        reference_shape=None,
        readout_shape=None,
        slot_weights_shape=None,
        training=None,
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
            rows = {
                self._rows(shape[0], mode) for mode in _grouping.modes(training, self.inference)
            }
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

    def compute_output_spec(
        self, inputs, reference=None, readout=None, slot_weights=None, training=None
    ):
        self._loss_weights = None
        self._layout(inputs, reference, readout, _grouping.modes(training, self.inference))
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

    @classmethod
    def from_config(cls, config):
        return super().from_config(_settings.saved_config(config, ("inference",)))


def _rows_weights(slot_weights, layout, reference, readout):
    """The `(G, n)` slot loss weights of the rows the loss scores, flat.

    Slot `s` of group `g` is slot row `g * n + s` (`groups_to_slots`); a
    sample's rows are its owned slots, in `readout` order.
    """
    flat = ops.reshape(slot_weights, (-1,))
    if layout == _grouping.GATHER:
        return ops.reshape(ops.take(flat, readout, axis=0), (-1,))
    if reference is not None:
        return flat[: _grouping.batch_size(reference)]
    return flat


def _describe_aggregate(aggregate):
    return f"Aggregate '{aggregate.name}' (n={aggregate.n}, inference={aggregate.inference!r})"
