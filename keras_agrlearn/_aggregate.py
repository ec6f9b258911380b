"""The `Aggregate` layer: n samples in, one aggregated input out."""

import warnings

import keras
from keras import ops

from keras_agrlearn import _data_parallel
from keras_agrlearn import _defaults
from keras_agrlearn import _grouping
from keras_agrlearn import _settings
from keras_agrlearn import _validation


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class Aggregate(keras.layers.Layer):
    """Concatenates groups of n samples along a feature axis.

    A batch `(B, ..., C)` becomes `(ceil(B / n), ..., n * C)`: group `g` holds
    samples `g*n ... g*n + n - 1`, and sample `g*n + s` occupies positions
    `[s*C, (s+1)*C)` along `axis`. When B is not a multiple of n, the last group
    is completed with samples taken cyclically from the start of the batch, so
    every batch size >= 1 works, under `jit` too. Pair it with `Deaggregate`,
    which splits the network's `n * K` outputs back into per-sample rows.

    Outside training the layout follows `inference`:

    - `"replicate"`: each sample fills all n slots of its own group
      (`(B, ..., n*C)`); a prediction depends on the sample alone.
    - `"group"`: as in training; about n times fewer forward passes, but a
      prediction depends on the samples it shares a group with.
    - `"contextual"`: each sample is placed `draws` times in a random slot
      among n - 1 companions drawn at random from the same batch
      (`(draws * B, ..., n*C)`).

    Args:
        n: int >= 1, the number of samples per group. `n=1` is the identity.
        axis: int, the feature axis to concatenate along (never the batch
            axis). Defaults to `-1`, the channel axis of channels-last data.
        inference: `"replicate"`, `"group"` or `"contextual"`: the layout
            outside training. Defaults to `"replicate"`, as in `wrap`.
        shuffle: bool, whether to permute the samples of each training batch
            before grouping, for input pipelines that do not shuffle. The
            permutation must be undone by `Deaggregate(readout=...)` (see
            `return_readout`). Defaults to `False`.
        repetition: float in `[0, 1)` or None, the share of training samples
            that fill all n slots of a group of their own (MIMO-style input
            repetition), which shows the network the identical slots it sees
            in replicate inference. Defaults to None, which means `0.5` with
            `inference="replicate"` and n > 1 and `0` otherwise, as in `wrap`.
        batch_repetition: int >= 1 or None, how many times each training batch
            is grouped, each time after an independent random permutation
            (MIMO's batch repetition): every sample sits in `batch_repetition`
            groups per step, at about `batch_repetition` times the step's
            cost. Inference is unchanged. Defaults to None, which means 1, as
            in `wrap`.
        draws: int >= 1, the number of companion sets per sample in contextual
            inference. Defaults to `4`.
        seed: int or None, the seed of the random permutations and companions.
            Defaults to None.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Every argument after `n` is keyword-only. A config saved before these
    defaults (keras-agrlearn 0.x) that lacks `inference`, `repetition` or
    `batch_repetition` loads with the defaults of then: `"group"`, `0` and
    `1`.

    Call arguments:
        inputs: a tensor `(B, ...)`.
        training: bool, whether the layer runs in training mode.
        return_readout: bool. If `True`, also return the `(B, R)` int32
            positions of each sample's slots among the `G * n` slots, which
            `Deaggregate(...)(y, readout=readout)` uses to return each sample's
            prediction in its own row. Required whenever the call draws its
            groups at random (`shuffle`, `repetition`, `batch_repetition > 1`
            in training; contextual inference): without it the layer raises,
            since no one could tell which row belongs to which sample. With
            the defaults (input and batch repetition) training draws at
            random, so a model built from the layers passes the readout; a
            `Sequential` model cannot, use `wrap` or a Functional model.

    Returns:
        The aggregated tensor, or `(aggregated, readout)`.

    Raises:
        ValueError, TypeError: for an invalid argument, an input of rank < 2,
            or a random layout called without `return_readout=True`.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import Aggregate
    >>> x = np.arange(10, dtype="float32").reshape(5, 2)
    >>> y = Aggregate(n=2, inference="group")(x)
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 0.0, 1.0]]
    >>> y, readout = Aggregate(n=2)(x[:2], return_readout=True)
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.0, 1.0, 0.0, 1.0], [2.0, 3.0, 2.0, 3.0]]
    """

    def __init__(
        self,
        n,
        *,
        axis=-1,
        inference=_defaults.INFERENCE,
        shuffle=False,
        repetition=None,
        batch_repetition=None,
        draws=4,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)
        self.axis = _validation.check_axis_type(axis)
        self.inference = _validation.check_inference(inference)
        self.shuffle = _validation.check_bool("shuffle", shuffle)
        if repetition is None:
            repetition = _defaults.repetition_for(self.n, self.inference)
        self.repetition = _validation.check_repetition(repetition)
        if batch_repetition is None:
            batch_repetition = _defaults.BATCH_REPETITION
        self.batch_repetition = _validation.check_batch_repetition(batch_repetition, self.n)
        self.draws = _validation.check_draws(draws)
        self.seed = _validation.check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False
        # The data-parallel warning is given once per layer, not once per trace.
        self._warned_split = False

    @property
    def permutes_in_training(self):
        """Whether training groups are drawn at random (a GATHER layout)."""
        return self.shuffle or self.repetition > 0 or self.batch_repetition > 1

    @property
    def needs_readout(self):
        """Whether `Deaggregate` needs this layer's readout in some mode."""
        return self.permutes_in_training or self.inference == "contextual"

    def _layout(self, mode):
        return _grouping.layout(mode, self.permutes_in_training)

    def build(self, input_shape):
        _validation.check_axis(self.axis, len(input_shape))

    def call(self, inputs, training=None, return_readout=False):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        batch = _grouping.batch_size(inputs)
        if isinstance(batch, int) and batch == 0:
            raise ValueError(
                "Aggregate received an empty batch (0 samples); it needs at "
                "least one sample per batch."
            )
        mode = _grouping.mode_of(training, self.inference)
        layout = self._layout(mode)
        self._check_readout_requested(layout, return_readout)
        if layout != _grouping.TILE:
            # Replicate inference reads every sample on its own.
            self._warn_split(batch)
        readout = None
        if layout == _grouping.TILE:
            # Tiling along the feature axis is the replicate layout in one copy.
            outputs = _grouping.tile_groups(inputs, self.n, axis)
        elif layout == _grouping.CONSECUTIVE:
            sources = None
            if not (isinstance(batch, int) and batch % self.n == 0):
                sources, _ = _grouping.group_plan(batch, self.n)
            outputs = _grouping.to_groups(inputs, self.n, axis, sources)
        else:
            sources, readout = self._gather_plan(batch, mode)
            outputs = _grouping.to_groups(inputs, self.n, axis, sources)
        _grouping.remember(inputs, self)
        if not return_readout:
            return outputs
        if readout is None:
            readout = self._own_rows_readout(batch, layout)
        _grouping.remember(readout, self)
        return outputs, readout

    def _gather_plan(self, batch, mode):
        """The slot `sources` and `readout` of a GATHER layout."""
        if mode == "contextual":
            return _grouping.contextual_plan(batch, self.n, self.draws, self.seed_generator)
        if self.batch_repetition == 1:
            return self._training_grouping(batch, self.shuffle)
        # Each repetition is an independent permutation; its slots follow
        # those of the previous ones, so its readout is offset by their count.
        sources, readouts, offset = [], [], 0
        for _ in range(self.batch_repetition):
            plan_sources, plan_readout = self._training_grouping(batch, shuffle=True)
            sources.append(plan_sources)
            readouts.append(plan_readout + offset)
            offset = offset + _grouping.batch_size(plan_sources)
        return (
            ops.concatenate(sources, axis=0),
            ops.concatenate(readouts, axis=1),
        )

    def _training_grouping(self, batch, shuffle):
        """One grouping of a training batch: with input repetition, or groups."""
        if self.repetition > 0:
            return _grouping.repetition_plan(
                batch,
                self.n,
                _grouping.repeated_count(batch, self.repetition),
                self.seed_generator,
            )
        return _grouping.group_plan(batch, self.n, self.seed_generator if shuffle else None)

    def _own_rows_readout(self, batch, layout):
        """The readout of the layouts where the slots alone say who owns what."""
        if layout == _grouping.TILE:
            return _grouping.replicate_readout(batch, self.n)
        return ops.expand_dims(ops.arange(batch, dtype="int32"), 1)

    def _check_readout_requested(self, layout, return_readout):
        """Refuses a random layout whose readout would be lost.

        Only the readout tells which slots hold which sample in a GATHER
        layout; without it `Deaggregate` could return misaligned rows.
        """
        if layout == _grouping.GATHER and not return_readout:
            raise ValueError(
                f"{self._describe()} draws its groups at random (shuffle, "
                "repetition, batch_repetition > 1 or contextual inference), so "
                "only its readout tells which rows belong to which sample: call "
                "it with `return_readout=True` and pass the readout to "
                "`Deaggregate(...)(y, readout=readout)`. A Sequential model "
                "cannot pass it: use `keras_agrlearn.wrap(model, ...)` or a "
                "Functional model."
            )

    def _describe(self):
        options = [f"n={self.n}", f"inference={self.inference!r}"]
        if self.shuffle:
            options.append("shuffle=True")
        if self.repetition > 0:
            options.append(f"repetition={self.repetition}")
        if self.batch_repetition > 1:
            options.append(f"batch_repetition={self.batch_repetition}")
        return f"Aggregate({', '.join(options)})"

    def _warn_split(self, batch):
        if self._warned_split:
            return
        message = _data_parallel.split_warning(batch, self.n)
        if message is not None:
            self._warned_split = True
            # stacklevel 3: the caller of the layer, past Layer.__call__.
            warnings.warn(message, stacklevel=3)

    def save_own_variables(self, store):
        # Keras leaves SeedGenerator states out of weights files; without this,
        # shuffle and repetition draws restart when BackupAndRestore resumes.
        store["seed_generator_state"] = keras.ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store):
        if "seed_generator_state" in store:
            self.seed_generator.state.assign(store["seed_generator_state"])

    def _grouped_batch(self, batch, mode):
        return _grouping.grouped_batch(
            batch,
            self.n,
            mode,
            repetition=self.repetition,
            batch_repetition=self.batch_repetition,
            draws=self.draws,
        )

    def compute_output_shape(self, input_shape, training=None):
        """The output shape; its batch is known where the mode fixes it.

        Without `training` (a symbolic call in a Functional model) the batch
        is known only when training and inference make the same number of
        groups.
        """
        axis = _validation.check_axis(self.axis, len(input_shape))
        shape = list(input_shape)
        batches = {
            self._grouped_batch(shape[0], mode)
            for mode in _grouping.modes(training, self.inference)
        }
        shape[0] = batches.pop() if len(batches) == 1 else None
        if shape[axis] is not None:
            shape[axis] *= self.n
        return tuple(shape)

    def compute_output_spec(self, inputs, training=None, return_readout=False):
        # A symbolic call builds a graph for training and inference alike
        # (`training` is None): it must ask for the readout if either mode
        # draws at random.
        for mode in _grouping.modes(training, self.inference):
            self._check_readout_requested(self._layout(mode), return_readout)
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape, training), dtype=inputs.dtype
        )
        _grouping.remember(inputs, self)
        if not return_readout:
            return outputs
        readout = keras.KerasTensor((inputs.shape[0], self._readout_width(training)), dtype="int32")
        _grouping.remember(readout, self)
        return outputs, readout

    def _readout_width(self, training):
        """How many slots each sample owns, when the mode fixes it."""
        widths = set()
        for mode in _grouping.modes(training, self.inference):
            if mode == "training":
                owned = self.n if self.repetition > 0 else 1
                widths.add(owned * self.batch_repetition)
            else:
                widths.add({"replicate": self.n, "contextual": self.draws}.get(mode, 1))
        return widths.pop() if len(widths) == 1 else None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n": self.n,
                "axis": self.axis,
                "inference": self.inference,
                "shuffle": self.shuffle,
                "repetition": self.repetition,
                "batch_repetition": self.batch_repetition,
                "draws": self.draws,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(
            _settings.saved_config(config, ("inference", "repetition", "batch_repetition"))
        )
