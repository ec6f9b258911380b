"""The `MixedEncoders` layer: n per-slot encoders whose features are mixed (MixMo)."""

import keras
from keras import ops

from keras_agrlearn import _defaults
from keras_agrlearn import _validation

# The encoder kinds: a kernel over (..., input channels, output channels), so
# one layer over n concatenated slots is the sum of n per-slot layers.
ENCODER_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
# Keeps the mixing ratios of the "other" slots finite when a cut takes all.
_EPSILON = 1e-6
# Candidates per Gamma draw: Marsaglia and Tsang's test accepts each with
# probability above 0.95, so all of them fail with probability below 1e-10.
_GAMMA_CANDIDATES = 8


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class MixedEncoders(keras.layers.Layer):
    """n per-slot encoders whose features are mixed in training (MixMo).

    A `Dense` or `Conv` layer over n samples concatenated along its channel
    axis (what `Aggregate` makes) is exactly the sum of n per-slot layers on
    C channels each: `layer(concat(x_1..x_n)) = sum_s encoder_s(x_s)`. This
    layer holds those n encoders, copies of `layer` without bias or
    activation, with the same total FLOPs, and combines their features
    `l_s` before adding the bias and applying the activation:

    - Outside training, and always with `mixing="sum"`, it sums them, which
      is the function of `layer` on the n*C concatenated channels.
    - In training, with `mixing="linear"`, it draws per group the mixing
      ratios `kappa ~ Dirichlet(alpha, ..., alpha)` (for n=2, `kappa_0 ~
      Beta(alpha, alpha)` and `kappa_1 = 1 - kappa_0`) and returns
      `n * sum_s kappa_s * l_s`.
    - With `mixing="cut"`, each group is cut with probability `prob`
      (otherwise mixed linearly): slot 0 fills a binary mask `m` of about a
      share `kappa_0` of the feature positions and the other slots, mixed
      linearly among themselves, fill the rest: `n * (m * l_0 + (1 - m) *
      sum_{s>0} kappa_s / (1 - kappa_0) * l_s)`, CutMix of the first slot
      with MixUp of the others, as in MixMo for n > 2.

    The mask is a box over the feature positions: the spatial axes of a
    convolution's output, the time axis of a `Dense` or `Conv1D` over a
    sequence (an `Embedding`'s output, say), and, for a `Dense` on flat
    features `(G, units)`, a contiguous block of the units. Each side of the
    box is `kappa_0 ** (1 / d)` of its axis (d axes), rounded up or down at
    random so that its expected size is exact, and the box wraps around the
    axis end (no clipping), so the share of positions that slot 0 fills has
    expected value `kappa_0`. The realised shares are what the slot loss
    weights use.

    Every slot also gets a loss weight, MixMo's reweighting of the slots by
    their share: `w_s = n * share_s ** (1 / root) / sum_t share_t ** (1 /
    root)` (for n=2, `w(kappa) = 2 kappa^(1/r) / (kappa^(1/r) + (1 -
    kappa)^(1/r))`), and 1 outside training. `keras_agrlearn.wrap` passes
    them to `Deaggregate`, and `AgrLearnModel` multiplies them into the
    sample weights when `objective="slots"`.

    `prob` is held in a non-trainable variable, `mixing_prob`, so a callback
    can change it during training (`keras_agrlearn.MixingDecay` lowers it to
    0 over the last twelfth of training, as MixMo does).

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D` or `Conv3D` layer (or its
            serialized form), the encoder of one slot: its config gives the
            n encoders, its bias and its activation. It is used as a
            template only; its weights are not used.
        n: int >= 1, the number of slots (encoders).
        axis: int, the channel axis of the input, along which the n slots of
            C channels each lie. Defaults to `-1`.
        mixing: `"sum"`, `"cut"` or `"linear"`, how training combines the
            encoders' features (see above). Defaults to `"cut"`.
        alpha: finite float > 0, the concentration of the mixing ratios.
            Defaults to `2.0`, MixMo's.
        prob: float in `[0, 1]`, the probability of the cut mask per group
            with `mixing="cut"`. Defaults to `0.5`, MixMo's.
        root: finite float > 0, the root `r` of the slot loss weights;
            larger values weigh the slots more evenly. Defaults to `3.0`,
            MixMo's.
        seed: int or None, the seed of the ratios and masks. Defaults to None.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the aggregated tensor `(G, ..., n*C)` (n*C along `axis`).
        training: bool, whether the layer runs in training mode.
        return_slot_weights: bool. If `True`, also return the `(G, n)` loss
            weights of the slots. Defaults to `False`.

    Returns:
        The mixed features, shaped as `layer`'s output, or `(features,
        slot_weights)`.

    Raises:
        ValueError, TypeError: for an invalid argument, an encoder that is
            not a `Dense` or `Conv` layer, or an input whose channel axis is
            not a multiple of n.

    Example:

    >>> import numpy as np
    >>> from keras_agrlearn import MixedEncoders
    >>> layer = MixedEncoders(keras.layers.Dense(4, activation="relu"), n=2, seed=1)
    >>> x = np.random.rand(3, 2 * 5).astype("float32")
    >>> layer(x).shape
    (3, 4)
    >>> features, weights = layer(x, training=True, return_slot_weights=True)
    >>> tuple(weights.shape)
    (3, 2)
    """

    def __init__(
        self,
        layer,
        n,
        *,
        axis=-1,
        mixing="cut",
        alpha=_defaults.MIXING_ALPHA,
        prob=_defaults.MIXING_PROB,
        root=_defaults.MIXING_ROOT,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, ENCODER_LAYERS):
            raise TypeError(
                "Argument `layer` (the encoder of one slot) must be a Dense, "
                f"Conv1D, Conv2D or Conv3D layer, got {type(layer).__name__}."
            )
        # The template is kept as its config: as an attribute it would be
        # tracked as a sublayer that is never built.
        self.layer_config = keras.saving.serialize_keras_object(layer)
        self.n = _validation.check_n(n)
        self.axis = _validation.check_axis_type(axis)
        self.mixing = _validation.check_mixing(mixing)
        self.alpha = _validation.check_positive("alpha", alpha, "the concentration of the ratios")
        self.prob = _validation.check_probability("prob", prob, "the probability of a cut mask")
        self.root = _validation.check_positive("root", root, "the root of the slot loss weights")
        self.seed = _validation.check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        config = layer.get_config()
        self.use_bias = bool(config.get("use_bias", True))
        self.activation = keras.activations.get(config.get("activation"))
        self._bias_config = {
            key: config.get(f"bias_{key}") for key in ("initializer", "regularizer", "constraint")
        }
        encoder = {
            **config,
            "use_bias": False,
            "activation": None,
            "activity_regularizer": None,
            # The encoders compute in this layer's dtype policy.
            "dtype": self.dtype_policy,
        }
        self.encoders = [
            type(layer).from_config({**encoder, "name": f"{self.name}_encoder_{slot}"})
            for slot in range(self.n)
        ]
        self.supports_masking = False

    def build(self, input_shape):
        axis = _validation.check_axis(self.axis, len(input_shape))
        channels = input_shape[axis]
        if channels is None or channels % self.n:
            raise ValueError(
                f"MixedEncoders '{self.name}' needs the size of axis {self.axis} "
                f"to be a known multiple of n={self.n} (n slots of C channels "
                f"each), got input shape {tuple(input_shape)}."
            )
        slot_shape = list(input_shape)
        slot_shape[axis] = channels // self.n
        for encoder in self.encoders:
            encoder.build(tuple(slot_shape))
        output_shape = self.encoders[0].compute_output_shape(tuple(slot_shape))
        self._output_axis = _output_channel_axis(self.encoders[0], len(output_shape))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(output_shape[self._output_axis],),
                initializer=self._bias_config["initializer"] or "zeros",
                regularizer=self._bias_config["regularizer"],
                constraint=self._bias_config["constraint"],
            )
        self.mixing_prob = self.add_weight(
            name="mixing_prob",
            shape=(),
            initializer=keras.initializers.Constant(self.prob),
            trainable=False,
        )

    def call(self, inputs, training=None, return_slot_weights=False):
        axis = _validation.check_axis(self.axis, len(inputs.shape))
        slots = ops.split(inputs, self.n, axis=axis)
        features = [encoder(x) for encoder, x in zip(self.encoders, slots)]
        groups = ops.shape(inputs)[0]
        if training and self.mixing != "sum" and self.n > 1:
            outputs, weights = self._mix(features)
        else:
            outputs = features[0]
            for feature in features[1:]:
                outputs = outputs + feature
            weights = ops.ones((groups, self.n), dtype="float32")
        if self.bias is not None:
            shape = [1] * len(outputs.shape)
            shape[self._output_axis] = -1
            outputs = outputs + ops.reshape(ops.cast(self.bias, outputs.dtype), shape)
        if self.activation is not None:
            outputs = self.activation(outputs)
        if return_slot_weights:
            return outputs, weights
        return outputs

    def _mix(self, features):
        """The mixed features and the `(G, n)` slot loss weights of one call."""
        groups = ops.shape(features[0])[0]
        gammas = _gamma((groups, self.n), self.alpha, self.seed_generator)
        ratios = gammas / ops.sum(gammas, axis=1, keepdims=True)
        rank = len(features[0].shape)
        dtype = features[0].dtype
        linear = self.n * self._combine(features, ratios, rank, dtype)
        if self.mixing == "linear":
            return linear, self._weights(ratios)
        cut_chosen = keras.random.uniform((groups,), seed=self.seed_generator) < ops.cast(
            self.mixing_prob, "float32"
        )
        mask, share = self._box_mask(features[0], ratios[:, 0])
        rest = ratios[:, 1:] / ops.maximum(1.0 - ratios[:, :1], _EPSILON)
        others = self._combine(features[1:], rest, rank, dtype)
        mask = ops.cast(mask, dtype)
        cut = self.n * (mask * features[0] + (1.0 - mask) * others)
        cut_shares = ops.concatenate(
            [ops.expand_dims(share, 1), ops.expand_dims(1.0 - share, 1) * rest], axis=1
        )
        chosen = ops.reshape(cut_chosen, [-1] + [1] * (rank - 1))
        outputs = ops.where(chosen, cut, linear)
        shares = ops.where(ops.expand_dims(cut_chosen, 1), cut_shares, ratios)
        return outputs, self._weights(shares)

    def _combine(self, features, ratios, rank, dtype):
        """`sum_s ratios[:, s] * features[s]`, the ratios per group."""
        total = 0.0
        for slot, feature in enumerate(features):
            ratio = ops.reshape(ops.cast(ratios[:, slot], dtype), [-1] + [1] * (rank - 1))
            total = total + ratio * feature
        return total

    def _box_mask(self, feature, share):
        """A box mask over the feature positions per group, and its share.

        The box of each group covers about `share` of the positions (exactly
        in expectation); returns the bool mask, broadcastable to `feature`,
        and the realised share, `(G,)`.
        """
        rank = len(feature.shape)
        axes = [a for a in range(1, rank) if a != self._output_axis] or [self._output_axis]
        groups = ops.shape(feature)[0]
        mask = None
        for axis in axes:
            size = ops.shape(feature)[axis]
            length = ops.cast(size, "float32")
            side = ops.floor(
                share ** (1.0 / len(axes)) * length
                + keras.random.uniform((groups,), seed=self.seed_generator)
            )
            start = ops.floor(keras.random.uniform((groups,), seed=self.seed_generator) * length)
            positions = ops.cast(ops.arange(size), "float32")
            offset = ops.mod(ops.expand_dims(positions, 0) - ops.expand_dims(start, 1), length)
            inside = offset < ops.expand_dims(side, 1)
            shape = [-1] + [1] * (rank - 1)
            shape[axis] = size
            inside = ops.reshape(inside, shape)
            mask = inside if mask is None else ops.logical_and(mask, inside)
        realised = ops.mean(ops.cast(mask, "float32"), axis=list(range(1, rank)))
        return mask, realised

    def _weights(self, shares):
        """MixMo's slot loss weights: `n * share ** (1/r) / sum(share ** (1/r))`."""
        powered = ops.power(ops.maximum(shares, 0.0), 1.0 / self.root)
        return self.n * powered / ops.maximum(ops.sum(powered, axis=1, keepdims=True), _EPSILON)

    def compute_output_shape(self, input_shape):
        axis = _validation.check_axis(self.axis, len(input_shape))
        slot_shape = list(input_shape)
        if slot_shape[axis] is not None:
            slot_shape[axis] //= self.n
        return tuple(self.encoders[0].compute_output_shape(tuple(slot_shape)))

    def compute_output_spec(self, inputs, training=None, return_slot_weights=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_slot_weights:
            return outputs
        return outputs, keras.KerasTensor((inputs.shape[0], self.n), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": self.layer_config,
                "n": self.n,
                "axis": self.axis,
                "mixing": self.mixing,
                "alpha": self.alpha,
                "prob": self.prob,
                "root": self.root,
                "seed": self.seed,
            }
        )
        return config


def _gamma(shape, alpha, seed_generator):
    """Gamma(alpha, 1) draws of `shape` from normal and uniform draws only.

    Marsaglia and Tsang's method (2000), with a fixed number of candidates
    per draw so that it is one vectorised computation on every backend
    (`keras.random.gamma` has no XLA kernel on TensorFlow). For alpha < 1 it
    draws Gamma(alpha + 1) and multiplies by `U ** (1 / alpha)`. The Beta and
    Dirichlet ratios are normalised Gamma draws.
    """
    boost = alpha < 1.0
    d = (alpha + 1.0 if boost else alpha) - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    candidates = (_GAMMA_CANDIDATES,) + tuple(shape)
    x = keras.random.normal(candidates, seed=seed_generator)
    u = keras.random.uniform(candidates, seed=seed_generator)
    v = (1.0 + c * x) ** 3
    positive = v > 0
    safe_v = ops.where(positive, v, 1.0)
    accepted = ops.logical_and(
        positive, ops.log(u) < 0.5 * x**2 + d - d * safe_v + d * ops.log(safe_v)
    )
    # The first accepted candidate (the last one if none is).
    first = ops.argmax(
        ops.concatenate(
            [ops.cast(accepted[:-1], "int32"), ops.ones((1,) + tuple(shape), "int32")], axis=0
        ),
        axis=0,
    )
    draws = ops.squeeze(ops.take_along_axis(d * safe_v, ops.expand_dims(first, 0), axis=0), 0)
    if boost:
        draws = draws * keras.random.uniform(tuple(shape), seed=seed_generator) ** (1.0 / alpha)
    return draws


def _output_channel_axis(layer, rank):
    """The channel axis of `layer`'s output: 1 for channels-first convolutions."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1
