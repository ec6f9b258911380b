"""`TemperatureScaling`: divides a classifier's scores by one fitted temperature."""

import keras
from keras import ops

from keras_agrlearn import _validation

# Probabilities below this are clipped before their logarithm: far below any
# probability a float32 softmax resolves, so tempering keeps their order.
TINY = 1e-30


@keras.saving.register_keras_serializable(package="keras_agrlearn", name="TemperatureScaling")
class TemperatureScaling(keras.layers.Layer):
    """Tempers class scores: `softmax(log p / T)` or `logits / T`.

    Temperature scaling (Guo et al., 2017) calibrates a trained classifier
    with one number: its log-probabilities are divided by a temperature `T`
    and normalised again. `T > 1` softens over-confident predictions,
    `T < 1` sharpens under-confident ones, and the predicted class never
    changes. `keras_agrlearn.calibrate_temperature` fits `T` on validation
    data and puts this layer on top of the model.

    The layer keeps the kind of scores it receives: with
    `from_logits=False` it takes probabilities `(..., K)` and returns
    tempered probabilities, with `from_logits=True` it takes logits and
    returns tempered logits `logits / T`. It computes in float32 at least,
    whatever the dtype policy.

    Args:
        temperature: a finite number > 0, the temperature `T`.
        from_logits: bool, whether the inputs are logits rather than
            probabilities. Defaults to `False`. Arguments after
            `temperature` are keyword-only.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: class probabilities (or logits) `(..., K)`.

    Returns:
        The tempered probabilities (or logits), of the shape of `inputs`.

    Raises:
        TypeError: if `temperature` is not a number or `from_logits` not a
            bool.
        ValueError: if `temperature` is not finite and > 0.

    Example:

    >>> import numpy as np
    >>> layer = TemperatureScaling(2.0)
    >>> probs = np.array([[0.8, 0.2]], dtype="float32")
    >>> tempered = keras.ops.convert_to_numpy(layer(probs))
    >>> bool(np.allclose(tempered, [[2 / 3, 1 / 3]], atol=1e-6))
    True
    """

    def __init__(self, temperature, *, from_logits=False, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _validation.check_temperature(temperature)
        if not isinstance(from_logits, bool):
            raise TypeError(
                f"Argument `from_logits` must be a bool, got {from_logits!r} "
                f"of type {type(from_logits).__name__}."
            )
        self.from_logits = from_logits

    def call(self, inputs):
        standardized = keras.backend.standardize_dtype(inputs.dtype)
        dtype = "float64" if standardized == "float64" else "float32"
        scores = ops.cast(inputs, dtype)
        if self.from_logits:
            return ops.cast(scores / self.temperature, self.compute_dtype)
        logs = ops.log(ops.clip(scores, TINY, 1.0))
        return ops.cast(ops.softmax(logs / self.temperature, axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "from_logits": self.from_logits})
        return config
