"""The `Aggregate` layer: n samples in, one aggregated input out."""

import sys
import warnings

import keras
from keras import ops

from keras_agrlearn import _grouping
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

    - `"group"`: as in training; about n times fewer forward passes, but a
      prediction depends on the samples it shares a group with.
    - `"replicate"`: each sample fills all n slots of its own group
      (`(B, ..., n*C)`); a prediction depends on the sample alone.
    - `"contextual"`: each sample is placed `draws` times in a random slot
      among n - 1 companions drawn at random from the same batch
      (`(draws * B, ..., n*C)`).

    Args:
        n: int >= 1, the number of samples per group. `n=1` is the identity.
        axis: int, the feature axis to concatenate along (never the batch
            axis). Defaults to `-1`, the channel axis of channels-last data.
        inference: `"group"`, `"replicate"` or `"contextual"`: the layout
            outside training. Defaults to `"group"`.
        shuffle: bool, whether to permute the samples of each training batch
            before grouping, for input pipelines that do not shuffle. The
            permutation must be undone by `Deaggregate(readout=...)` (see
            `return_readout`). Defaults to `False`.
        repetition: float in `[0, 1)`, the share of training samples that fill
            all n slots of a group of their own (MIMO-style input repetition),
            which shows the network the identical slots it sees in replicate
            inference. Defaults to `0.0`.
        batch_repetition: int >= 1, how many times each training batch is
            grouped, each time after an independent random permutation
            (MIMO's batch repetition): every sample sits in `batch_repetition`
            groups per step, at about `batch_repetition` times the step's
            cost. Inference is unchanged. Defaults to `1`.
        draws: int >= 1, the number of companion sets per sample in contextual
            inference. Defaults to `4`.
        seed: int or None, the seed of the random permutations and companions.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor `(B, ...)`.
        training: bool, whether the layer runs in training mode.
        return_readout: bool. If `True`, also return the `(B, R)` int32
            positions of each sample's slots among the `G * n` slots, which
            `Deaggregate(...)(y, readout=readout)` uses to return each sample's
            prediction in its own row. Needed with `shuffle`, `repetition` and
            contextual inference; optional otherwise.

    Returns:
        The aggregated tensor, or `(aggregated, readout)`.

    Raises:
        ValueError, TypeError: for an invalid argument, or an input of rank < 2.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import Aggregate
    >>> x = np.arange(10, dtype="float32").reshape(5, 2)
    >>> y = Aggregate(n=2)(x)
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 0.0, 1.0]]
    """

    def __init__(
        self,
        n,
        axis=-1,
        inference="group",
        shuffle=False,
        repetition=0.0,
        draws=4,
        seed=None,
        batch_repetition=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n = _validation.check_n(n)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Argument `axis` must be an integer, got {axis!r}.")
        self.axis = axis
        self.inference = _validation.check_inference(inference)
        self.shuffle = bool(shuffle)
        self.repetition = _validation.check_repetition(repetition)
        self.batch_repetition = _validation.check_batch_repetition(batch_repetition)
        if self.n == 1 and self.batch_repetition > 1:
            raise ValueError(
                "Argument `batch_repetition` must be 1 when n=1: with one sample "
                "per group every grouping is the same, so repeating the batch "
                f"only repeats the gradient; got batch_repetition={batch_repetition}."
            )
        self.draws = _validation.check_draws(draws)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False
        # The tf.distribute warning is given once per layer (see call).
        self._warned_replica_split = False

    @property
    def needs_readout(self):
        """Whether `Deaggregate` needs this layer's readout to align rows."""
        return (
            self.shuffle
            or self.repetition > 0
            or self.batch_repetition > 1
            or self.inference == "contextual"
        )

    def build(self, input_shape):
        _validation.check_axis(self.axis, len(input_shape))

    def _plan(self, batch, training):
        """The slot sources and readout of the layouts that need a gather.

        Outside training only contextual inference gets here: group and
        replicate inference are plain reshapes and tiles in `call`.
        """
        if not training:
            return _grouping.contextual_plan(
                batch, self.n, self.draws, self.seed_generator
            )
        if self.batch_repetition == 1:
            return self._grouping_plan(batch, self.shuffle)
        # Each repetition is an independent permutation; its slots follow
        # those of the previous ones, so its readout is offset by their count.
        sources, readouts, offset = [], [], 0
        for _ in range(self.batch_repetition):
            plan_sources, plan_readout = self._grouping_plan(batch, shuffle=True)
            sources.append(plan_sources)
            readouts.append(plan_readout + offset)
            offset = offset + _grouping.batch_size(plan_sources)
        return (
            ops.concatenate(sources, axis=0),
            ops.concatenate(readouts, axis=1),
        )

    def _grouping_plan(self, batch, shuffle):
        """One grouping of a training batch: with input repetition, or groups."""
        if self.repetition > 0:
            if isinstance(batch, int):
                repeated = int(self.repetition * batch + 0.5)
            else:
                repeated = ops.cast(
                    ops.floor(self.repetition * ops.cast(batch, "float32") + 0.5),
                    "int32",
                )
            return _grouping.repetition_plan(
                batch, self.n, repeated, self.seed_generator
            )
        return _grouping.group_plan(
            batch, self.n, self.seed_generator if shuffle else None
        )

    def call(self, inputs, training=None, return_readout=False):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        batch = _grouping.batch_size(inputs)
        if isinstance(batch, int) and batch == 0:
            raise ValueError(
                "Aggregate received an empty batch (0 samples); it needs at "
                "least one sample per batch."
            )
        training = bool(training)
        if training or self.inference == "group":
            # Replicate and contextual inference read every sample on its own.
            self._check_device_split(batch)
        simple = not (
            training
            and (self.shuffle or self.repetition > 0 or self.batch_repetition > 1)
        )
        if simple and self.inference == "replicate" and not training:
            # Tiling along the feature axis is the replicate layout in one copy.
            reps = [1] * len(inputs.shape)
            reps[axis] = self.n
            outputs = ops.tile(inputs, reps)
            if return_readout:
                return outputs, self._default_readout(batch, training)
            return outputs
        if simple and (training or self.inference == "group"):
            readout = None
            if isinstance(batch, int) and batch % self.n == 0:
                slots = inputs
            else:
                sources, _ = _grouping.group_plan(batch, self.n)
                slots = ops.take(inputs, sources, axis=0)
        else:
            sources, readout = self._plan(batch, training)
            slots = ops.take(inputs, sources, axis=0)
        outputs = _grouping.slots_to_groups(slots, self.n, axis)
        if not return_readout:
            return outputs
        if readout is None:
            readout = self._default_readout(batch, training)
        return outputs, readout

    def _check_device_split(self, batch):
        """Warns when a data-parallel batch splits groups across devices.

        Under `keras.distribution.DataParallel` the layer sees the global batch,
        which is then sharded: unless it is a multiple of `n * devices`, groups
        span devices and training differs from one device. Under a
        `tf.distribute` strategy it sees one replica's share instead
        (`_check_replica_split`).
        """
        replicas = _tensorflow_replicas()
        if replicas > 1:
            self._check_replica_split(batch, replicas)
            return
        distribution = keras.distribution.distribution()
        if distribution is None or not isinstance(batch, int):
            return
        mesh = distribution.device_mesh
        batch_axis = getattr(distribution, "batch_dim_name", None)
        if batch_axis not in mesh.axis_names:
            return
        devices = mesh.shape[mesh.axis_names.index(batch_axis)]
        if devices > 1 and batch % (self.n * devices):
            warnings.warn(
                f"Aggregate(n={self.n}): the per-device batch is not a multiple "
                f"of n (global batch {batch} on {devices} devices), so groups "
                "span devices. Use a global batch size that is a multiple of "
                f"n * devices = {self.n * devices}.",
                stacklevel=2,
            )

    def _check_replica_split(self, batch, replicas):
        """Warns, once per layer, when tf.distribute replicas break groups.

        Under a `tf.distribute` strategy each replica runs this layer on its
        own share of the global batch. A share that is not a multiple of `n`
        is completed cyclically within the replica, so training differs from
        one device. The share is usually unknown while the step is traced
        (the last batch of an epoch may be smaller), so then the warning
        states the rule instead of a detected break.
        """
        if self._warned_replica_split:
            return
        rule = (
            f"Use a global batch size that is a multiple of n * replicas = "
            f"{self.n * replicas}."
        )
        if isinstance(batch, int):
            if batch % self.n == 0:
                return
            message = (
                f"Aggregate(n={self.n}): the per-device batch is not a multiple "
                f"of n ({batch} samples on each of {replicas} replicas), so "
                f"groups are completed within each device and training "
                f"differs from one device. {rule}"
            )
        else:
            message = (
                f"Aggregate(n={self.n}) runs on {replicas} tf.distribute "
                "replicas, which each group their own share of the batch; the "
                "per-device batch is not known when the step is traced, so it "
                "cannot be checked. Training matches one device only when the "
                f"per-device batch is a multiple of n. {rule}"
            )
        self._warned_replica_split = True
        warnings.warn(message, stacklevel=3)

    def save_own_variables(self, store):
        # Keras leaves SeedGenerator states out of weights files; without this,
        # shuffle and repetition draws restart when BackupAndRestore resumes.
        store["seed_generator_state"] = keras.ops.convert_to_numpy(
            self.seed_generator.state.value
        )

    def load_own_variables(self, store):
        if "seed_generator_state" in store:
            self.seed_generator.state.assign(store["seed_generator_state"])

    def _default_readout(self, batch, training):
        if not training and self.inference == "replicate":
            return _grouping.replicate_readout(batch, self.n)
        return ops.expand_dims(ops.arange(batch, dtype="int32"), 1)

    def compute_output_shape(self, input_shape):
        axis = _validation.check_axis(self.axis, len(input_shape))
        shape = list(input_shape)
        # The number of groups depends on the batch and on training/inference.
        shape[0] = None
        if shape[axis] is not None:
            shape[axis] *= self.n
        return tuple(shape)

    def compute_output_spec(self, inputs, training=None, return_readout=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=inputs.dtype
        )
        if not return_readout:
            return outputs
        return outputs, keras.KerasTensor((inputs.shape[0], None), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n": self.n,
                "axis": self.axis,
                "inference": self.inference,
                "shuffle": self.shuffle,
                "repetition": self.repetition,
                "draws": self.draws,
                "seed": self.seed,
                "batch_repetition": self.batch_repetition,
            }
        )
        return config


def _tensorflow_replicas():
    """Replicas in sync when a `tf.distribute` strategy runs this call, else 1.

    TensorFlow is already loaded whenever it is the Keras backend; the library
    never imports it itself.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.distribute.has_strategy():
        return 1
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync
