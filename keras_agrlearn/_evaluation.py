"""`evaluate_uncertainty`: accuracy, calibration, diversity and OOD detection in one call."""

import weakref

import keras
import numpy as np

from keras_agrlearn import _scores
from keras_agrlearn import _validation
from keras_agrlearn._members import agrlearn_n
from keras_agrlearn._members import members
from keras_agrlearn._temperature import fit_temperature
from keras_agrlearn._temperature_scaling import TINY

OOD_SCORES = ("entropy", "msp", "mutual_information")
# One members model per AgrLearn model, so that repeated evaluations (shift
# severities, OOD sets) reuse its compiled predict function.
_MEMBER_MODELS = weakref.WeakKeyDictionary()


def evaluate_uncertainty(
    model,
    x,
    y,
    *,
    x_ood=None,
    validation_data=None,
    ood_score="entropy",
    batch_size=None,
    from_logits=False,
    num_bins=15,
):
    """Scores a classifier's predictions and, for ensembles, its members.

    Works for three kinds of `model`:

    - an AgrLearn model (built by `wrap`): the prediction is
      `model.predict(x)` and the members are `members(model)`, the n
      replicated slot predictions;
    - a list of models, a deep ensemble: the prediction is the mean of their
      probabilities and each model is a member;
    - any other Keras classifier: the prediction alone (no member keys).

    All scores are computed in float64 NumPy from the predictions:

    - `accuracy`; `nll`, the mean negative log-probability of the label
      (probabilities clipped at 1e-7, as in `NegativeLogLikelihood`); `ece`,
      the expected calibration error over `num_bins` equal-width confidence
      bins; `brier`, the Brier score summed over classes.
    - With members: `member_accuracy`, the members' mean accuracy;
      `disagreement`, the share of member pairs whose top classes differ,
      averaged over samples (0 for one member); `mutual_information`, the
      entropy of the mean member probabilities minus the mean member entropy,
      averaged over samples, in nats (the arithmetic mean is used even where
      the model's own prediction is the normalised geometric mean of its
      members, so that the value is never negative).
    - With `x_ood`: out-of-distribution detection with the samples of `x` as
      negatives and those of `x_ood` as positives, each scored by
      `ood_score`: `"entropy"` of the prediction, `"msp"` (one minus the
      maximum probability) or `"mutual_information"` (models with members).
      `ood_auroc` is the area under the ROC curve (ties count one half),
      `ood_aupr` the average precision (area under the precision-recall
      curve, OOD as the positive class) and `fpr95` the share of
      in-distribution samples flagged at the highest threshold that flags 95 %
      of the OOD samples.
    - With `validation_data`: one temperature `T` is fitted on the
      validation predictions by minimising their NLL (`fit_temperature`),
      and the prediction is tempered, `softmax(log p / T)`: `temperature`,
      and `tempered_nll`, `tempered_ece` and `tempered_brier` beside the raw
      ones (accuracy does not change). Temperature scaling is the standard
      first baseline for calibration: compare models by their tempered
      scores, or an over-confident plain model can make any other look
      well calibrated.

    Args:
        model: a `keras.Model` classifier with one output `(N, K)`, K >= 2, or
            a non-empty list of such models (a deep ensemble).
        x: the in-distribution inputs, a NumPy array (or a list or dict of
            arrays for a model with several inputs).
        y: the labels, integers in `[0, K)` of shape `(N,)` or `(N, 1)`, or
            one-hot targets `(N, K)`.
        x_ood: optional out-of-distribution inputs, with the structure and the
            per-sample shape of `x`. Defaults to None.
        validation_data: optional `(x_val, y_val)`, inputs with the
            structure of `x` and their labels, held out from training: the
            data the temperature is fitted on. Defaults to None (no
            tempered scores).
        ood_score: `"entropy"`, `"msp"` or `"mutual_information"`: the OOD
            score. Defaults to `"entropy"`.
        batch_size: int or None, the batch size of `predict`. Defaults to None
            (Keras' default, 32).
        from_logits: bool, whether the model outputs logits (a softmax is
            applied to each prediction and member) rather than probabilities.
            Defaults to `False`.
        num_bins: int >= 1, the number of ECE bins. Defaults to `15`.

    Returns:
        A dict of Python floats: `accuracy`, `nll`, `ece`, `brier`; for models
        with members also `member_accuracy`, `disagreement` and
        `mutual_information`; with `validation_data` also `temperature`,
        `tempered_nll`, `tempered_ece` and `tempered_brier`; with `x_ood`
        also `ood_auroc`, `ood_aupr` and `fpr95`.

    Raises:
        TypeError: if `model` is neither a `keras.Model` nor a list of them,
            `batch_size` or `num_bins` is not an integer (NumPy integers
            count), or `from_logits` is not a bool.
        ValueError: for an unknown `ood_score`, `batch_size` or `num_bins`
            below 1, `"mutual_information"` for a
            model without members, empty inputs or inputs holding NaN or
            infinite values, `x` and `y` of different lengths, `x_ood` of
            another structure or per-sample shape, `validation_data` that is
            not an `(x_val, y_val)` pair, labels that are not
            integers in `[0, K)` or one-hot rows, predictions that are not
            `(N, K)`, that are not probabilities while `from_logits=False`,
            or that are not finite.

    Example:

    >>> import numpy as np
    >>> import keras_agrlearn
    >>> backbone = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(3, activation="softmax"),
    ... ])
    >>> model = keras_agrlearn.wrap(backbone, n=3)
    >>> x, y = np.random.rand(30, 4), np.random.randint(0, 3, 30)
    >>> scores = keras_agrlearn.evaluate_uncertainty(
    ...     model, x, y, x_ood=np.random.rand(10, 4) + 5.0
    ... )
    >>> list(scores)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'nll', 'ece', 'brier', 'member_accuracy', 'disagreement',
     'mutual_information', 'ood_auroc', 'ood_aupr', 'fpr95']
    >>> 0.0 <= scores["ood_auroc"] <= 1.0
    True
    """
    models, kind = _models(model)
    _validation.check_choice("ood_score", ood_score, OOD_SCORES)
    batch_size = _validation.check_batch_size(batch_size)
    from_logits = _validation.check_bool("from_logits", from_logits)
    num_bins = _validation.check_num_bins(num_bins)
    if ood_score == "mutual_information" and kind == "plain":
        raise ValueError(
            "Argument `ood_score`: 'mutual_information' needs a model with "
            "members (an AgrLearn model built by wrap, or a list of models); "
            f"model '{models[0].name}' has none. Use 'entropy' or 'msp'."
        )
    x = _arrays(x, "x")
    count = _length(x, "x")
    y = np.asarray(y)
    if len(y) != count:
        raise ValueError(
            f"Arguments `x` and `y` must hold the same number of samples, got "
            f"{count} inputs and {len(y)} labels."
        )
    if x_ood is not None:
        x_ood = _arrays(x_ood, "x_ood")
        _length(x_ood, "x_ood")
        _check_same_sample_shape(x, x_ood)
    if validation_data is not None:
        x_val, y_val = _validation_pair(validation_data)
        x_val = _arrays(x_val, "validation_data")
        _check_same_sample_shape(x, x_val, "validation_data")
        if len(y_val) != _length(x_val, "validation_data"):
            raise ValueError(
                "Argument `validation_data` must hold as many labels as inputs, "
                f"got {_length(x_val, 'validation_data')} inputs and {len(y_val)} labels."
            )

    def predict(inputs):
        return _predict(models, kind, inputs, batch_size, from_logits)

    probs, member_probs = predict(x)
    labels = _validation.check_labels(y, probs.shape[-1])
    scores = {
        "accuracy": _scores.accuracy(probs, labels),
        "nll": _scores.nll(probs, labels),
        "ece": _scores.ece(probs, labels, num_bins),
        "brier": _scores.brier(probs, labels),
    }
    if validation_data is not None:
        val_probs, _ = predict(x_val)
        val_labels = _validation.check_labels(y_val, val_probs.shape[-1], "validation_data")
        temperature = fit_temperature(val_probs, val_labels, from_logits=False)
        tempered = _temper(probs, temperature)
        scores["temperature"] = temperature
        scores["tempered_nll"] = _scores.nll(tempered, labels)
        scores["tempered_ece"] = _scores.ece(tempered, labels, num_bins)
        scores["tempered_brier"] = _scores.brier(tempered, labels)
    if member_probs is not None:
        scores["member_accuracy"] = _scores.member_accuracy(member_probs, labels)
        scores["disagreement"] = _scores.disagreement(member_probs)
        scores["mutual_information"] = float(np.mean(_scores.mutual_information(member_probs)))
    if x_ood is not None:
        ood_probs, ood_members = predict(x_ood)
        negatives = _ood_scores(ood_score, probs, member_probs)
        positives = _ood_scores(ood_score, ood_probs, ood_members)
        scores["ood_auroc"] = _scores.auroc(negatives, positives)
        scores["ood_aupr"] = _scores.average_precision(negatives, positives)
        scores["fpr95"] = _scores.fpr_at_tpr(negatives, positives, 0.95)
    return scores


def _models(model):
    """The models to predict with and their kind: agrlearn, ensemble or plain."""
    if isinstance(model, (list, tuple)):
        if not model or not all(isinstance(m, keras.Model) for m in model):
            raise TypeError(
                "Argument `model` must be a keras.Model or a non-empty list of "
                f"keras.Model (a deep ensemble), got {model!r}."
            )
        return list(model), "ensemble"
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model or a non-empty list of "
            f"keras.Model (a deep ensemble), got {type(model).__name__}."
        )
    return [model], "plain" if agrlearn_n(model) is None else "agrlearn"


def _arrays(x, name):
    """`x` as a NumPy array, or a list or dict of them."""
    if isinstance(x, dict):
        return {key: np.asarray(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") for v in x):
        return [np.asarray(value) for value in x]
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"Argument `{name}` must be an array of samples, got a scalar.")
    return x


def _length(x, name):
    """The number of samples in `x`, after checking that it is usable."""
    for leaf in keras.tree.flatten(x):
        if leaf.dtype.kind in "fc" and not np.all(np.isfinite(leaf)):
            raise ValueError(
                f"Argument `{name}` contains {int(np.sum(~np.isfinite(leaf)))} "
                "NaN or infinite values; every input must be finite."
            )
    lengths = {len(leaf) if leaf.ndim else 0 for leaf in keras.tree.flatten(x)}
    if len(lengths) != 1:
        raise ValueError(
            f"Argument `{name}`: every input array must hold the same number of "
            f"samples, got lengths {sorted(lengths)}."
        )
    count = lengths.pop()
    if count == 0:
        raise ValueError(f"Argument `{name}` is empty; it needs at least one sample.")
    return count


def _validation_pair(validation_data):
    if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
        raise ValueError(
            "Argument `validation_data` must be a pair `(x_val, y_val)` of "
            f"inputs and labels, got {validation_data!r:.80}."
        )
    x_val, y_val = validation_data
    return x_val, np.asarray(y_val)


def _temper(probs, temperature):
    """`softmax(log p / T)` of float64 probabilities, as `TemperatureScaling` computes it."""
    logs = np.log(np.clip(probs, TINY, 1.0)) / temperature
    exp = np.exp(logs - np.max(logs, axis=-1, keepdims=True))
    return exp / np.sum(exp, axis=-1, keepdims=True)


def _check_same_sample_shape(x, x_ood, name="x_ood"):
    try:
        keras.tree.assert_same_structure(x, x_ood)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Argument `{name}` must have the structure of `x` (the model's inputs): {error}"
        ) from None
    for leaf, ood_leaf in zip(keras.tree.flatten(x), keras.tree.flatten(x_ood)):
        if leaf.shape[1:] != ood_leaf.shape[1:]:
            raise ValueError(
                f"Argument `{name}` must have the per-sample shape of `x`, got "
                f"{ood_leaf.shape[1:]} against {leaf.shape[1:]} (shapes "
                f"{ood_leaf.shape} and {leaf.shape})."
            )


def _predict(models, kind, x, batch_size, from_logits):
    """The prediction `(N, K)` and the member predictions `(N, M, K)` or None."""
    if kind == "agrlearn":
        model = models[0]
        outputs = model.predict(x, batch_size=batch_size, verbose=0)
        probs = _probabilities(outputs, model, from_logits)
        if model not in _MEMBER_MODELS:
            _MEMBER_MODELS[model] = members(model)
        outputs = _MEMBER_MODELS[model].predict(x, batch_size=batch_size, verbose=0)
        member_probs = _probabilities(outputs, model, from_logits, member_axis=True)
        return probs, member_probs
    ensemble = kind == "ensemble"
    outputs = [
        _probabilities(m.predict(x, batch_size=batch_size, verbose=0), m, from_logits)
        for m in models
    ]
    if len({p.shape for p in outputs}) > 1:
        raise ValueError(
            "Argument `model`: the models of the ensemble predict different "
            f"shapes: {[p.shape for p in outputs]}."
        )
    if not ensemble:
        return outputs[0], None
    member_probs = np.stack(outputs, axis=1)
    return np.mean(member_probs, axis=1), member_probs


def _probabilities(outputs, model, from_logits, member_axis=False):
    """The model's outputs as float64 probabilities, after checking them."""
    expected = "(N, M, K)" if member_axis else "(N, K)"
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"Argument `model`: model '{model.name}' has several outputs; "
            "evaluate_uncertainty needs a classifier with one output."
        )
    outputs = np.asarray(outputs, dtype="float64")
    if outputs.ndim != (3 if member_axis else 2) or outputs.shape[-1] < 2:
        raise ValueError(
            f"Argument `model`: model '{model.name}' predicts shape "
            f"{outputs.shape}, while evaluate_uncertainty needs class scores "
            f"{expected} with K >= 2 classes."
        )
    if not np.all(np.isfinite(outputs)):
        raise ValueError(
            f"Model '{model.name}' predicts NaN or infinite values for "
            f"{int(np.sum(~np.all(np.isfinite(outputs), axis=-1)))} rows; "
            "check the model's weights."
        )
    if from_logits:
        shifted = outputs - np.max(outputs, axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / np.sum(exp, axis=-1, keepdims=True)
    sums = np.sum(outputs, axis=-1)
    tolerance = _validation.SUM_TOLERANCE
    if np.min(outputs) < -tolerance or np.max(np.abs(sums - 1.0)) > tolerance:
        raise ValueError(
            f"Model '{model.name}' does not predict probabilities (row sums "
            f"from {np.min(sums):.4g} to {np.max(sums):.4g}, smallest value "
            f"{np.min(outputs):.4g}); pass `from_logits=True` for a model "
            "whose head outputs logits."
        )
    return np.clip(outputs, 0.0, 1.0)


def _ood_scores(name, probs, member_probs):
    if name == "entropy":
        return _scores.entropy(probs)
    if name == "msp":
        return 1.0 - np.max(probs, axis=-1)
    return _scores.mutual_information(member_probs)
