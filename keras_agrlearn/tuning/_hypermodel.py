"""`AgrLearnHyperModel`: a KerasTuner search space over n, width and repetitions."""

import inspect
import math
import numbers
import time

import keras
import keras_tuner

from keras_agrlearn import _defaults
from keras_agrlearn import _flops
from keras_agrlearn import _validation
from keras_agrlearn._aggregate import Aggregate
from keras_agrlearn._wrap import wrap

# Arguments of `wrap` that the hypermodel sets per trial; every other keyword
# of `wrap` is passed through unchanged and stays the same in every trial.
_TUNED = ("model", "n", "width", "inference", "repetition", "batch_repetition", "mixing")
_WRAP_OPTIONS = tuple(name for name in inspect.signature(wrap).parameters if name not in _TUNED)


class AgrLearnHyperModel(keras_tuner.HyperModel):
    """Searches the aggregation factor `n`, the width and the repetitions.

    Every trial wraps a fresh copy of `backbone` with `keras_agrlearn.wrap`
    and compiles it. The hyperparameters are named `"n"`, `"width"`,
    `"batch_repetition"`, `"repetition"` and `"learning_rate"`. `n=1` is the
    backbone itself (widened by `width`; batch and input repetition do not
    apply to it), so a search with `1` among the choices tells whether
    aggregation helps at all. The model takes and returns per-sample tensors,
    so the tuner's `search(x, y, validation_data=...)` works as for any Keras
    model.

    **Equal compute.** A trial's training cost is its forward FLOPs per pass
    (the built model's, counted from its layers: two FLOPs per kernel weight
    and output position, so a model widened by `width` costs about `width**2`
    times the backbone's per pass) times its passes per epoch: an n-fold model
    feeds one group of n samples per pass, input repetition r fills all n
    slots with a share r of the samples, and batch repetition b groups each
    batch b times, so it makes about `b * (r + (1 - r) / n)` passes per
    training sample (counted per batch, as `Aggregate` groups it, when the
    training data are arrays; by this formula for a dataset or generator).
    With `equal_compute=True` (the default) the `epochs` passed to `search`
    are the plain network's budget (the backbone with `n=1`, `width=1`), and
    each trial trains

        epochs * plain FLOPs per epoch / trial FLOPs per epoch

    epochs, rounded to the nearest (halves up), at least one: every trial
    gets about the plain network's training FLOPs, so the search favours
    neither a wide model (more FLOPs per pass) nor large `b` (more passes
    per epoch), nor penalises large `n` (fewer passes). Each trial records,
    per training sample over its whole fit, `forward_passes` and
    `training_flops` (a training step costs three forward passes), its
    `relative_training_flops` (times the plain network's at `epochs`, about
    1 with equal compute), the `inference_flops` of one prediction and
    `fit_seconds`; `keras_agrlearn.tuning.leaderboard` shows them.

    Args:
        backbone: a Functional or Sequential `keras.Model` classifier, or a
            callable without arguments that returns one. A model is never
            trained itself: `wrap` rebuilds it with new weights every trial.
        n: an int >= 1 or a sequence of them, the aggregation factors to
            search. A single value is fixed. Defaults to `(1, 2, 3, 4)`.
            Arguments after `n` are keyword-only.
        width: a number > 0 or a sequence of them, the hidden width
            multipliers to search. Defaults to `(1.0, 1.5, 2.0)`.
        batch_repetition: None, an int >= 1 or a sequence of them, the
            batch repetitions to search. None (the default) keeps `wrap`'s
            default for each n (`b = n`).
        repetition: None, a number in `[0, 1)` or a sequence of them, the
            input repetition shares to search. None (the default) keeps
            `wrap`'s default (`0.5` with replicated inference).
        mixing: None, `"sum"`, `"cut"`, `"linear"` or a sequence of them,
            the feature mixing to search, as the hyperparameter `"mixing"`
            (see `wrap`; every choice costs the same FLOPs). None (the
            default) keeps `wrap`'s default, `"sum"`.
        equal_compute: bool, whether each trial's epochs are scaled to the
            plain network's training FLOPs (see above). Defaults to `True`.
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
            `"group"` or `"contextual"` (see `wrap`). Defaults to `wrap`'s
            default, `"replicate"`.
        name: str or None, the hypermodel's name.
        tunable: bool, whether the hyperparameters may be tuned. Defaults to
            `True`.
        **wrap_kwargs: other keyword arguments of `wrap` (`shuffle`,
            `objective`, `draws`, `seed`, `head`, `aggregate_after`, ...),
            passed to `wrap` in every trial.

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
        *,
        width=(1.0, 1.5, 2.0),
        batch_repetition=None,
        repetition=None,
        mixing=None,
        equal_compute=True,
        learning_rate=1e-3,
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        inference=_defaults.INFERENCE,
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
        self.batch_repetition = (
            None
            if batch_repetition is None
            else _choices(batch_repetition, _validation.check_batch_repetition, "batch_repetition")
        )
        self.repetition = (
            None
            if repetition is None
            else _choices(repetition, _validation.check_repetition, "repetition")
        )
        self.mixing = (
            None if mixing is None else _choices(mixing, _validation.check_mixing, "mixing")
        )
        self.equal_compute = bool(equal_compute)
        self.learning_rate = _learning_rate_range(learning_rate)
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        self.inference = _validation.check_inference(inference)
        self.wrap_kwargs = wrap_kwargs
        self._plain_flops = None

    def build(self, hp):
        """Returns the trial's wrapped and compiled model.

        Args:
            hp: a `keras_tuner.HyperParameters`.

        Returns:
            A compiled `keras.Model` taking and returning per-sample tensors.
        """
        n = _declare(hp, "n", self.n)
        width = _declare(hp, "width", self.width)
        batch_repetition = repetition = None
        if self.batch_repetition is not None:
            batch_repetition = _declare(hp, "batch_repetition", self.batch_repetition)
        if self.repetition is not None:
            repetition = _declare(hp, "repetition", self.repetition)
        if n == 1:
            # Nothing to repeat with one sample per group.
            batch_repetition, repetition = 1, 0.0
        if len(self.learning_rate) == 1:
            learning_rate = hp.Fixed("learning_rate", self.learning_rate[0])
        else:
            low, high = self.learning_rate
            learning_rate = hp.Float("learning_rate", low, high, sampling="log")
        mixing = {}
        if self.mixing is not None:
            mixing["mixing"] = (
                hp.Choice("mixing", self.mixing)
                if len(self.mixing) > 1
                else hp.Fixed("mixing", self.mixing[0])
            )
        model = self._wrap(n, width, batch_repetition, repetition, **mixing)
        model.compile(
            optimizer=self._new_optimizer(learning_rate),
            loss=_copy(self.loss),
            metrics=[_copy(metric) for metric in self.metrics],
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains the trial's model, at the plain network's training FLOPs.

        With `equal_compute`, `epochs` (and Hyperband's `initial_epoch`) are
        scaled by the trial's training FLOPs per epoch relative to the plain
        network's (see the class docstring). The returned history carries
        `forward_passes`, `training_flops`, `relative_training_flops`,
        `inference_flops` and `fit_seconds`, which KerasTuner stores with
        the trial's metrics.
        """
        epochs = kwargs.get("epochs", 1)
        initial_epoch = kwargs.get("initial_epoch", 0)
        passes = _passes_per_sample(model, args, kwargs)
        forward = _flops.forward_flops(model)
        plain = self._plain_forward_flops()
        # The trial's training FLOPs per epoch, times the plain network's.
        cost = forward * passes / plain
        if self.equal_compute:
            kwargs["epochs"] = max(1, _round(epochs / cost))
            if initial_epoch:
                kwargs["initial_epoch"] = min(kwargs["epochs"] - 1, _round(initial_epoch / cost))
        trained = kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0)
        start = time.perf_counter()
        history = model.fit(*args, **kwargs)
        seconds = time.perf_counter() - start
        aggregate = _aggregate(model)
        group = aggregate is not None and aggregate.inference == "group"
        metrics = {
            "forward_passes": trained * passes,
            "training_flops": _flops.TRAINING_PASS_COST * forward * passes * trained,
            "relative_training_flops": cost * trained / max(1, epochs - initial_epoch),
            "inference_flops": forward / aggregate.n if group else forward,
            "fit_seconds": seconds,
        }
        rows = len(history.history.get("loss", [])) or 1
        for name, value in metrics.items():
            history.history[name] = [float(value)] * rows
        return history

    def _wrap(self, n, width, batch_repetition, repetition, **options):
        return wrap(
            self._fresh_backbone(),
            n=n,
            width=width,
            inference=self.inference,
            batch_repetition=batch_repetition,
            repetition=repetition,
            **options,
            **self.wrap_kwargs,
        )

    def _plain_forward_flops(self):
        """Forward FLOPs of the plain network (`n=1`, `width=1`), counted once."""
        if self._plain_flops is None:
            self._plain_flops = _flops.forward_flops(self._wrap(1, 1.0, 1, 0.0))
        return self._plain_flops

    def _fresh_backbone(self):
        if isinstance(self.backbone, keras.Model):
            return self.backbone
        backbone = self.backbone()
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                f"The `backbone` callable must return a keras.Model, got {type(backbone).__name__}."
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


def _aggregate(model):
    """The model's first `Aggregate` layer, or None for the plain network."""
    aggregates = [layer for layer in model.layers if isinstance(layer, Aggregate)]
    return aggregates[0] if aggregates else None


def _passes_per_sample(model, args, kwargs):
    """Forward passes per training sample and epoch (the plain network: 1).

    Counted batch by batch, as `Aggregate` groups it, when the training data
    are arrays (their rows, less `validation_split`, in batches of
    `batch_size`); by `b * (r + (1 - r) / n)` when they come from a dataset
    or generator, whose batches are not known ahead.
    """
    settings = getattr(model, "settings", None)
    if settings is None or _aggregate(model) is None:
        return 1.0
    n, r, b = settings.n, settings.repetition, settings.batch_repetition
    x = args[0] if args else kwargs.get("x")
    first = keras.tree.flatten(x)[0] if x is not None else None
    rows = getattr(first, "shape", (None,))[0]
    if not isinstance(rows, int):
        return b * (r + (1.0 - r) / n)
    samples = math.floor(rows * (1.0 - kwargs.get("validation_split", 0.0)))
    batch_size = kwargs.get("batch_size") or 32
    return _flops.passes_per_epoch(samples, batch_size, n, r, b) / samples


def _round(value):
    """`value` rounded to the nearest int, halves up."""
    return math.floor(value + 0.5)


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
    values = tuple(learning_rate) if isinstance(learning_rate, (list, tuple)) else (learning_rate,)
    valid = len(values) in (1, 2) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in values
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
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
