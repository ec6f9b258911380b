"""`AgrLearnHyperModel`: a KerasTuner search space over n, width, repetitions and the optimizer."""

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
# Each trial's training-FLOP cap, in units of the plain network's training
# FLOPs over the `epochs` given to `search`: aggregated models need more
# epochs than the plain one (docs/RESULTS.md), so the cap leaves room for
# them, and the plain network gets twice its epochs too.
DEFAULT_TRAINING_BUDGET = 2.0


class AgrLearnHyperModel(keras_tuner.HyperModel):
    """Searches `n`, the width, the repetitions and the optimizer under one FLOP cap.

    Every trial wraps a fresh copy of `backbone` with `keras_agrlearn.wrap`
    and compiles it. The hyperparameters are named `"n"`, `"width"`,
    `"batch_repetition"`, `"repetition"`, `"learning_rate"` and
    `"weight_decay"` (AdamW's, by default). `n=1` is the backbone itself
    (widened by `width`; batch and input repetition do not apply to it), so
    a search with `1` among the choices tells whether aggregation helps at
    all. The model takes and returns per-sample tensors, so the tuner's
    `search(x, y, validation_data=...)` works as for any Keras model.

    **One training-FLOP cap per trial.** A trial's training cost per epoch
    is its forward FLOPs per pass (the built model's, counted from its
    layers: two FLOPs per kernel weight and output position, so a model
    widened by `width` costs about `width**2` times the backbone's per
    pass) times its passes per epoch: an n-fold model feeds one group of n
    samples per pass, input repetition r fills all n slots with a share r of
    the samples, and batch repetition b groups each batch b times, so it
    makes about `b * (r + (1 - r) / n)` passes per training sample (counted
    per batch, as `Aggregate` groups it, when the training data are arrays;
    by this formula for a dataset or generator). With `equal_compute=True`
    (the default) every trial gets the same cap,

        training_budget * epochs * plain FLOPs per epoch

    where `epochs` is what `search` is given and the plain network is the
    backbone at `n=1`, `width=1`; by default `training_budget=2.0`, twice
    the plain network's FLOPs over `epochs`. Each trial trains the largest
    whole number of epochs that fits in the cap, so every configuration is
    compared at (up to one epoch) the same training FLOPs, and the search
    favours neither a wide model (more FLOPs per pass) nor large `b` (more
    passes per epoch), nor penalises large `n` (fewer passes). With
    `cosine_decay=True` (the default) the learning rate falls on a cosine
    from the trial's rate to zero over the trial's own epochs, so a trial
    of 10 epochs and one of 40 both anneal fully. A trial whose one epoch
    costs more than the cap is marked failed; a cap below one epoch of the
    cheapest configuration stops the search with a `ValueError`. Each
    trial records its `epochs`; per training sample over its whole fit,
    `forward_passes` and `training_flops` (a training step costs three
    forward passes); its `relative_training_flops` (times the plain
    network's at `epochs`, at most `training_budget` with equal compute);
    the `inference_flops` of one prediction and `fit_seconds`;
    `keras_agrlearn.tuning.leaderboard` shows them.

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
        equal_compute: bool, whether each trial trains the most epochs that
            fit in one training-FLOP cap (see above); otherwise every trial
            trains the `epochs` given to `search`. Defaults to `True`.
        training_budget: a number > 0, the cap of every trial in units of
            the plain network's training FLOPs over the `epochs` given to
            `search`. Defaults to `2.0`.
        learning_rate: a number > 0 (fixed), or a `(min, max)` pair searched
            on a log scale. Defaults to `(3e-4, 3e-3)`.
        weight_decay: None, a number > 0 (fixed), or a `(min, max)` pair
            searched on a log scale: the optimizer's `weight_decay` (decoupled
            in AdamW). None keeps the optimizer's own. Defaults to
            `(1e-4, 1e-1)`.
        optimizer: an optimizer name such as `"adamw"`, or a
            `keras.optimizers.Optimizer` whose configuration is copied into a
            new optimizer with the trial's learning rate and weight decay.
            Defaults to `"adamw"`.
        cosine_decay: bool, whether the learning rate decays on a cosine to
            zero over each trial's epochs (set once per epoch). Defaults to
            `True`.
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
        ValueError: from `search`, if `training_budget * epochs` is smaller
            than one epoch of the cheapest configuration of the space.

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
    >>> tuner.search(x, y, validation_data=(x, y), epochs=2, verbose=0)
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
        training_budget=DEFAULT_TRAINING_BUDGET,
        learning_rate=(3e-4, 3e-3),
        weight_decay=(1e-4, 1e-1),
        optimizer="adamw",
        cosine_decay=True,
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
        self.equal_compute = _validation.check_bool("equal_compute", equal_compute)
        self.training_budget = _positive("training_budget", training_budget)
        self.learning_rate = _range("learning_rate", learning_rate)
        self.weight_decay = None if weight_decay is None else _range("weight_decay", weight_decay)
        self.cosine_decay = _validation.check_bool("cosine_decay", cosine_decay)
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
        optimizer = self._declare_optimizer(hp)
        mixing = {}
        if self.mixing is not None:
            mixing["mixing"] = (
                hp.Choice("mixing", self.mixing)
                if len(self.mixing) > 1
                else hp.Fixed("mixing", self.mixing[0])
            )
        model = self._wrap(n, width, batch_repetition, repetition, **mixing)
        model.compile(
            optimizer=optimizer,
            loss=_copy(self.loss),
            metrics=[_copy(metric) for metric in self.metrics],
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains the trial's model for the most epochs its FLOP cap allows.

        With `equal_compute`, `epochs` (and Hyperband's `initial_epoch`) are
        replaced by the largest number of epochs whose training FLOPs fit in
        `training_budget` times the plain network's at `epochs` (see the
        class docstring). With `cosine_decay`, the learning rate follows a
        cosine from the trial's rate down to zero over those epochs. The
        returned history carries `epochs`, `forward_passes`,
        `training_flops`, `relative_training_flops`, `inference_flops` and
        `fit_seconds`, which KerasTuner stores with the trial's metrics.

        Raises:
            keras_tuner.errors.FatalValueError: (a ValueError) if the cap
                is smaller than one epoch of the cheapest configuration of
                the search space: no trial can train, the search stops.
            keras_tuner.errors.FailedTrialError: if the cap is smaller than
                one epoch of this trial (but not of every trial): the tuner
                marks the trial failed and goes on.
        """
        epochs = kwargs.get("epochs", 1)
        initial_epoch = kwargs.get("initial_epoch", 0)
        passes = _passes_per_sample(model, args, kwargs)
        forward = _flops.forward_flops(model)
        # The trial's training FLOPs per epoch, times the plain network's.
        cost = forward * passes / self._plain_forward_flops()
        if self.equal_compute:
            cap = self.training_budget * epochs
            kwargs["epochs"] = _epochs_within(cap, cost)
            if kwargs["epochs"] < 1:
                self._check_cap_fits_the_space(cap, epochs, args, kwargs)
                raise keras_tuner.errors.FailedTrialError(
                    f"One epoch of this trial costs {cost:.3g} plain epochs, more "
                    f"than its cap of {cap:.3g} (`training_budget={self.training_budget}` "
                    f"times `epochs={epochs}`); the trial is skipped."
                )
            if initial_epoch:
                kwargs["initial_epoch"] = min(
                    kwargs["epochs"] - 1, _epochs_within(self.training_budget * initial_epoch, cost)
                )
        total = kwargs.get("epochs", 1)
        if self.cosine_decay:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [
                _cosine_decay(model.optimizer, total)
            ]
        trained = total - kwargs.get("initial_epoch", 0)
        start = time.perf_counter()
        history = model.fit(*args, **kwargs)
        seconds = time.perf_counter() - start
        aggregate = _aggregate(model)
        group = aggregate is not None and aggregate.inference == "group"
        metrics = {
            "epochs": total,
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

    def _epoch_cost(self, model, args, kwargs):
        """Training FLOPs of one epoch of `model`, in plain-network epochs."""
        passes = _passes_per_sample(model, args, kwargs)
        return _flops.forward_flops(model) * passes / self._plain_forward_flops()

    def _check_cap_fits_the_space(self, cap, epochs, args, kwargs):
        """Raises a fatal error if no configuration of the space fits in `cap`."""
        costs = {}
        for n, width, batch_repetition, repetition in self._configurations():
            model = self._wrap(n, width, batch_repetition, repetition)
            costs[(n, width)] = min(
                costs.get((n, width), math.inf), self._epoch_cost(model, args, kwargs)
            )
        (n, width), cheapest = min(costs.items(), key=lambda item: item[1])
        if cheapest > cap:
            raise keras_tuner.errors.FatalValueError(
                f"Argument `training_budget`: a cap of {cap:.3g} plain epochs "
                f"(`training_budget={self.training_budget}` times "
                f"`epochs={epochs}`) is smaller than one epoch "
                f"of the cheapest trial of the search space (n={n}, width={width}: "
                f"{cheapest:.3g} plain epochs). Raise `training_budget` to at least "
                f"{cheapest / epochs:.3g} or `epochs` to at least "
                f"{math.ceil(cheapest / self.training_budget)}."
            )

    def _configurations(self):
        """Every (n, width, batch_repetition, repetition) the space holds."""
        found = []
        for n in self.n:
            for width in self.width:
                if n == 1:
                    found.append((1, width, 1, 0.0))
                    continue
                for b in self.batch_repetition or [None]:
                    for r in self.repetition or [None]:
                        found.append((n, width, b, r))
        return found

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

    def _declare_optimizer(self, hp):
        """The trial's optimizer, with its `learning_rate` and `weight_decay`."""
        settings = {"learning_rate": _declare_range(hp, "learning_rate", self.learning_rate)}
        if self.weight_decay is not None:
            settings["weight_decay"] = _declare_range(hp, "weight_decay", self.weight_decay)
        if isinstance(self.optimizer, str):
            return keras.optimizers.get({"class_name": self.optimizer, "config": settings})
        config = self.optimizer.get_config()
        config.update(settings)
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


def _epochs_within(cap, cost):
    """The most whole epochs of `cost` each that fit in `cap`.

    A relative tolerance keeps a cap of exactly k epochs from rounding down
    to k - 1.
    """
    return math.floor(cap / cost * (1.0 + 1e-9))


def _cosine_decay(optimizer, epochs):
    """A callback that lowers the learning rate on a cosine to 0 over `epochs`.

    Set once per epoch from the rate the trial started with, so a trial of
    few epochs and one of many both sweep the whole schedule.
    """
    initial = float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def rate(epoch, _):
        return initial * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    return keras.callbacks.LearningRateScheduler(rate)


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


def _range(name, value):
    """`(value,)` for a fixed value, `(min, max)` for a range searched on a log scale."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    valid = len(values) in (1, 2) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in values
    )
    if not valid or (len(values) == 2 and not values[0] < values[1]):
        raise ValueError(
            f"Argument `{name}` must be a number > 0 or a (min, max) pair "
            f"with 0 < min < max, got {value!r}."
        )
    return tuple(float(v) for v in values)


def _declare_range(hp, name, values):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Float(name, values[0], values[1], sampling="log")


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number > 0, got {value!r} of "
            f"type {type(value).__name__}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Argument `{name}` must be a finite number > 0, got {name}={value}.")
    return float(value)


def _copy(obj):
    """A fresh copy of a loss or metric object; names are used as they are.

    Metric objects hold state and belong to one model, so every trial gets
    its own from the configuration.
    """
    if obj is None or isinstance(obj, str) or not hasattr(obj, "get_config"):
        return obj
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
