"""`calibrate_temperature`: a model whose predictions are tempered on validation data."""

import keras
import numpy as np

from keras_agrlearn import _evaluation
from keras_agrlearn import _validation
from keras_agrlearn._temperature import fit_temperature
from keras_agrlearn._temperature_scaling import TemperatureScaling


def calibrate_temperature(model, x_val, y_val, *, from_logits=False, batch_size=None):
    """Fits a temperature on validation data and returns the tempered model.

    Temperature scaling (Guo et al., 2017) is the standard first baseline
    for calibration: one temperature `T`, fitted by minimising the
    negative log-likelihood of the validation labels (`fit_temperature`),
    divides the model's log-probabilities. The returned model predicts
    `softmax(log p / T)` where `model` predicts `p` (or `logits / T` for a
    logits head), so its accuracy is the model's and only its confidence
    changes: an over-confident model gets `T > 1`.

    Works for three kinds of `model`, as `evaluate_uncertainty` does:

    - a plain Keras classifier, and an AgrLearn model (built by `wrap`): the
      returned model is the model's own layer graph (sharing its weights)
      with a `TemperatureScaling` layer on its output, so
      `members` and `evaluate_uncertainty` see an AgrLearn model still, with
      tempered members;
    - a list of models (a deep ensemble): the returned model averages their
      probabilities (a softmax is applied first to logits heads) and
      tempers the mean; it outputs probabilities.

    The returned model is uncompiled; it saves and loads as a `.keras` file
    like any model built from this library's layers. Its last layer holds
    the temperature: `calibrated.layers[-1].temperature`.

    Args:
        model: a `keras.Model` classifier with one output `(N, K)`, K >= 2,
            or a non-empty list of such models (a deep ensemble).
        x_val: the validation inputs, a NumPy array (or a list or dict of
            arrays for a model with several inputs); data the model was not
            trained on.
        y_val: the validation labels, integers in `[0, K)` of shape `(N,)`
            or `(N, 1)`, or one-hot `(N, K)`.
        from_logits: bool, whether the model outputs logits (a head without
            activation) rather than probabilities (a softmax head). Defaults
            to `False`. Arguments after `y_val` are keyword-only.
        batch_size: int or None, the batch size of `predict`. Defaults to
            None (Keras' default, 32).

    Returns:
        A new `keras.Model` with the inputs of `model` whose predictions are
        tempered: probabilities for a softmax head or an ensemble, logits
        for a logits head.

    Raises:
        TypeError: if `model` is neither a `keras.Model` nor a list of them,
            or `from_logits` is not a bool.
        ValueError: if `x_val` or `y_val` is None (no validation data) or
            empty, if they hold different numbers of samples, if the model
            has several outputs or predicts anything but `(N, K)` class
            scores: values that are not probabilities while
            `from_logits=False`, or values that all lie in `[0, 1]` (a
            softmax or sigmoid head) while `from_logits=True`.

    Example:

    >>> import numpy as np
    >>> import keras_agrlearn
    >>> backbone = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(3, activation="softmax"),
    ... ])
    >>> model = keras_agrlearn.wrap(backbone, n=2)
    >>> x_val, y_val = np.random.rand(40, 4), np.random.randint(0, 3, 40)
    >>> tempered = keras_agrlearn.calibrate_temperature(model, x_val, y_val)
    >>> temperature = tempered.layers[-1].temperature
    >>> same = tempered.predict(x_val, verbose=0).argmax(1) == model.predict(
    ...     x_val, verbose=0).argmax(1)
    >>> bool(same.all())
    True
    """
    models, kind = _evaluation._models(model)
    from_logits = _validation.check_bool("from_logits", from_logits)
    batch_size = _validation.check_batch_size(batch_size)
    for name, value in (("x_val", x_val), ("y_val", y_val)):
        if value is None:
            raise ValueError(
                f"Argument `{name}` is None: calibrate_temperature fits the "
                "temperature on validation data, inputs `x_val` and labels "
                "`y_val` the model was not trained on (a split held out from "
                "the training data will do)."
            )
    x_val = _evaluation._arrays(x_val, "x_val")
    count = _evaluation._length(x_val, "x_val")
    y_val = np.asarray(y_val)
    if len(y_val) != count:
        raise ValueError(
            "Arguments `x_val` and `y_val` must hold the same number of "
            f"samples, got {count} inputs and {len(y_val)} labels."
        )
    outputs = [m.predict(x_val, batch_size=batch_size, verbose=0) for m in models]
    for m, output in zip(models, outputs):
        _check_scores(output, m, from_logits)
    y_val = _validation.check_labels(y_val, np.shape(outputs[0])[-1], "y_val")
    if kind == "ensemble":
        probs = [_evaluation._probabilities(o, m, from_logits) for o, m in zip(outputs, models)]
        temperature = fit_temperature(np.mean(probs, axis=0), y_val, from_logits=False)
        return _tempered_ensemble(models, temperature, from_logits)
    temperature = fit_temperature(outputs[0], y_val, from_logits=from_logits)
    model = models[0]
    scaled = TemperatureScaling(temperature, from_logits=from_logits)(model.output)
    return keras.Model(model.input, scaled, name=f"{model.name}_tempered")


def _check_scores(outputs, model, from_logits):
    """Refuses outputs that are not one `(N, K)` array of the declared kind."""
    # Raises for several outputs, a shape other than (N, K), non-finite
    # values and, with from_logits=False, rows that are not probabilities.
    _evaluation._probabilities(outputs, model, from_logits)
    outputs = np.asarray(outputs)
    if from_logits and np.min(outputs) >= 0.0 and np.max(outputs) <= 1.0:
        raise ValueError(
            f"Argument `from_logits=True`, but model '{model.name}' predicts "
            "values that all lie in [0, 1], as a softmax or sigmoid head does. "
            "Pass `from_logits=False` for a softmax head; temperature scaling "
            "needs class logits or class probabilities."
        )


def _tempered_ensemble(models, temperature, from_logits):
    """One model: the members' mean probabilities, tempered."""
    first = models[0]
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name),
        first.input,
    )
    probs = []
    for member in models:
        output = member(inputs)
        probs.append(keras.layers.Softmax()(output) if from_logits else output)
    mean = keras.layers.Average()(probs) if len(probs) > 1 else probs[0]
    scaled = TemperatureScaling(temperature, from_logits=False)(mean)
    return keras.Model(inputs, scaled, name="ensemble_tempered")
