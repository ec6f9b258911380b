"""`AgrLearnHyperModel`: a KerasTuner search space over n and width."""

import numbers

import keras
import keras_tuner

from keras_agrlearn import _validation
from keras_agrlearn.wrap import wrap

# `wrap` options that stay the same in every trial.
_WRAP_OPTIONS = ("shuffle", "repetition", "draws", "seed", "head", "aggregate_after")


class AgrLearnHyperModel(keras_tuner.HyperModel):
    """Searches the aggregation factor `n` and the width of a backbone.

    Every trial wraps a fresh copy of `backbone` with `keras_agrlearn.wrap`
    and compiles it. The hyperparameters are named `"n"`, `"width"` and
    `"learning_rate"`. `n=1` is the backbone itself (widened by `width`), so
    a search with `1` among the choices tells whether aggregation helps at
    all. The model takes and returns per-sample tensors, so the tuner's
    `search(x, y, validation_data=...)` works as for any Keras model.

    Args:
        backbone: a Functional or Sequential `keras.Model` classifier, or a
            callable without arguments that returns one. A model is never
            trained itself: `wrap` rebuilds it with new weights every trial.
        n: an int >= 1 or a sequence of them, the aggregation factors to
            search. A single value is fixed. Defaults to `(1, 2, 3, 4)`.
        width: a number > 0 or a sequence of them, the hidden width
            multipliers to search. Defaults to `(1.0, 1.5, 2.0)`.
        learning_rate: a number > 0 (fixed), or a `(min, max)` pair searched
            on a log scale. Defaults to `1e-3`.
        optimizer: an optimizer name such as `"adam"`, or a
            `keras.optimizers.Optimizer` whose configuration is copied into a
            new optimizer with the trial's learning rate. Defaults to
            `"adam"`.
        loss: the loss passed to `compile`. Defaults to
            `"sparse_categorical_crossentropy"`, which fits integer labels and
            a softmax head; a head without activation needs
            `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
        metrics: a list of metrics passed to `compile`; the tuner's objective
            (`"val_accuracy"` in the examples) must come from one of them.
            Defaults to `("accuracy",)`.
        inference: the test protocol of the wrapped model, `"replicate"`,
            `"group"` or `"contextual"` (see `wrap`). Defaults to
            `"replicate"`.
        name: str or None, the hypermodel's name.
        tunable: bool, whether the hyperparameters may be tuned. Defaults to
            `True`.
        **wrap_kwargs: `shuffle`, `repetition`, `draws`, `seed`, `head` or
            `aggregate_after`, passed to `wrap` in every trial.

    Raises:
        ValueError, TypeError: for an invalid argument.

    Example:

    >>> import numpy as np
    >>> import keras_tuner
    >>> backbone = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(8, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> hypermodel = AgrLearnHyperModel(backbone, n=(1, 2), width=(1.0, 2.0))
    >>> tuner = keras_tuner.RandomSearch(
    ...     hypermodel, objective="val_accuracy", max_trials=2,
    ...     directory="/tmp/agrlearn_example", overwrite=True,
    ... )
    >>> x, y = np.random.rand(64, 8, 8, 1), np.random.randint(0, 10, 64)
    >>> tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    >>> best = tuner.get_best_hyperparameters()[0]
    >>> best.get("n") in (1, 2)
    True
    """

    def __init__(
        self,
        backbone,
        n=(1, 2, 3, 4),
        width=(1.0, 1.5, 2.0),
        learning_rate=1e-3,
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        inference="replicate",
        name=None,
        tunable=True,
        **wrap_kwargs,
    ):
        super().__init__(name=name, tunable=tunable)
        if not isinstance(backbone, keras.Model) and not callable(backbone):
            raise TypeError(
                "Argument `backbone` must be a keras.Model or a callable without "
                f"arguments that returns one, got {type(backbone).__name__}."
            )
        unknown = sorted(set(wrap_kwargs) - set(_WRAP_OPTIONS))
        if unknown:
            raise TypeError(
                f"Unknown keyword arguments {unknown}; AgrLearnHyperModel passes "
                f"only {list(_WRAP_OPTIONS)} on to wrap()."
            )
        if not isinstance(optimizer, (str, keras.optimizers.Optimizer)):
            raise TypeError(
                "Argument `optimizer` must be an optimizer name or a "
                f"keras.optimizers.Optimizer, got {type(optimizer).__name__}."
            )
        self.backbone = backbone
        self.n = _choices(n, _validation.check_n, "n")
        self.width = _choices(width, _validation.check_width, "width")
        self.learning_rate = _learning_rate_range(learning_rate)
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        self.inference = _validation.check_inference(inference)
        self.wrap_kwargs = wrap_kwargs

    def build(self, hp):
        """Returns the trial's wrapped and compiled model.

        Args:
            hp: a `keras_tuner.HyperParameters`.

        Returns:
            A compiled `keras.Model` taking and returning per-sample tensors.
        """
        n = _declare(hp, "n", self.n)
        width = _declare(hp, "width", self.width)
        if len(self.learning_rate) == 1:
            learning_rate = hp.Fixed("learning_rate", self.learning_rate[0])
        else:
            low, high = self.learning_rate
            learning_rate = hp.Float("learning_rate", low, high, sampling="log")
        model = wrap(
            self._fresh_backbone(),
            n=n,
            width=width,
            inference=self.inference,
            **self.wrap_kwargs,
        )
        model.compile(
            optimizer=self._new_optimizer(learning_rate),
            loss=_copy(self.loss),
            metrics=[_copy(metric) for metric in self.metrics],
        )
        return model

    def _fresh_backbone(self):
        if isinstance(self.backbone, keras.Model):
            return self.backbone
        backbone = self.backbone()
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                "The `backbone` callable must return a keras.Model, got "
                f"{type(backbone).__name__}."
            )
        return backbone

    def _new_optimizer(self, learning_rate):
        if isinstance(self.optimizer, str):
            return keras.optimizers.get(
                {"class_name": self.optimizer, "config": {"learning_rate": learning_rate}}
            )
        config = self.optimizer.get_config()
        config["learning_rate"] = learning_rate
        return type(self.optimizer).from_config(config)


def _choices(value, check, name):
    """The validated choices of a hyperparameter given as a value or a sequence."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"Argument `{name}` needs at least one value, got {value!r}.")
    values = [check(v) for v in values]
    if len(set(values)) != len(values):
        raise ValueError(f"Argument `{name}` lists a value twice: {value!r}.")
    return values


def _declare(hp, name, values):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values, ordered=True)


def _learning_rate_range(learning_rate):
    """`(value,)` for a fixed learning rate, `(min, max)` for a range."""
    values = (
        tuple(learning_rate)
        if isinstance(learning_rate, (list, tuple))
        else (learning_rate,)
    )
    valid = len(values) in (1, 2) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0
        for v in values
    )
    if not valid or (len(values) == 2 and not values[0] < values[1]):
        raise ValueError(
            "Argument `learning_rate` must be a number > 0 or a (min, max) pair "
            f"with 0 < min < max, got {learning_rate!r}."
        )
    return tuple(float(v) for v in values)


def _copy(obj):
    """A fresh copy of a loss or metric object; names are used as they are.

    Metric objects hold state and belong to one model, so every trial gets
    its own from the configuration.
    """
    if obj is None or isinstance(obj, str) or not hasattr(obj, "get_config"):
        return obj
    return keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(obj)
    )
