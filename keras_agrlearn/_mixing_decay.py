"""The `MixingDecay` callback: MixMo's cut probability, down to 0 at the end of training."""

import keras

from keras_agrlearn import _keras_internals
from keras_agrlearn import _validation
from keras_agrlearn._mixed_encoders import MixedEncoders


class MixingDecay(keras.callbacks.Callback):
    """Lowers the cut probability of feature mixing linearly to 0 at the end.

    MixMo trains with cut masks with probability p and lowers p linearly to
    0 over the last twelfth of training, so that the network ends its
    training on the linear mixing closest to the summed features it sees at
    inference. This callback does so for every `MixedEncoders` layer of the
    model (`wrap(..., mixing="cut")`): at the start of epoch `e` of `E`, it
    sets the layer's `mixing_prob` variable to

        prob * clip((1 - (e + 0.5) / E) / fraction, 0, 1)

    where `prob` is the layer's configured probability: the value at the
    epoch's middle of a linear decay that starts at `1 - fraction` of
    training and reaches 0 at its end. The variable changes once per epoch,
    since the JAX backend reads variables once per epoch. Pass the callback
    to `fit` like any Keras callback; a model without `MixedEncoders`
    layers is left alone. After training, the variable keeps its last value.

    Args:
        fraction: float in `(0, 1]`, the share of training over which the
            probability decays. Defaults to `1 / 12`, MixMo's.

    Raises:
        ValueError, TypeError: for an invalid `fraction`.

    Example:

    >>> import numpy as np
    >>> import keras_agrlearn
    >>> backbone = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(8, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> model = keras_agrlearn.wrap(backbone, n=2, mixing="cut", objective="slots")
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> x, y = np.random.rand(16, 8, 8, 1), np.random.randint(0, 10, 16)
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[keras_agrlearn.MixingDecay(fraction=0.5)])
    >>> layer = next(l for l in model.layers if isinstance(l, keras_agrlearn.MixedEncoders))
    >>> float(keras.ops.convert_to_numpy(layer.mixing_prob))
    0.25
    """

    def __init__(self, fraction=1 / 12):
        super().__init__()
        fraction = _validation.check_positive(
            "fraction", fraction, "the share of training over which the probability decays"
        )
        if fraction > 1:
            raise ValueError(
                "Argument `fraction` (the share of training over which the "
                f"probability decays) must be in (0, 1], got fraction={fraction}."
            )
        self.fraction = fraction

    def factor(self, epoch, epochs):
        """The share of the configured probability used in `epoch` of `epochs`."""
        remaining = 1.0 - (epoch + 0.5) / epochs
        return min(1.0, max(0.0, remaining / self.fraction))

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") if self.params else None
        if not epochs:
            return
        factor = self.factor(epoch, epochs)
        for layer in _keras_internals.sublayers(self.model):
            if isinstance(layer, MixedEncoders):
                layer.mixing_prob.assign(layer.prob * factor)
