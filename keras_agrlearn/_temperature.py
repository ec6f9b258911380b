"""`fit_temperature`: the temperature that minimises the NLL, from arrays alone."""

import numpy as np

from keras_agrlearn import _validation
from keras_agrlearn._temperature_scaling import TINY

# The temperatures searched: beyond them a validation set says only that the
# model is (almost) always right or (almost) never.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2
# Bisection steps on log(1 / T): the bracket shrinks to below float64's
# resolution well before the last one.
_STEPS = 200


def fit_temperature(scores, labels, *, from_logits=True):
    """The temperature that minimises the NLL of tempered predictions.

    The tempered prediction of a row of logits `z` is `softmax(z / T)`; for
    probabilities `p` it is `softmax(log p / T)` (the same, since a
    probability row is the softmax of its logarithm). The mean negative
    log-likelihood of the labels is convex in `1 / T`, so its derivative
    (the mean over rows of the expected score under the tempered
    prediction, less the label's score, times -1 / T^2) changes sign once;
    the minimiser is found by bisection of that derivative on a log scale,
    to float64 precision, in NumPy. Dividing by `T > 0` never changes a
    row's largest score, so tempering never changes the predicted class.

    This is the numerical core of `calibrate_temperature` and of the
    tempered scores of `evaluate_uncertainty`; it works on stored
    predictions without a model.

    Args:
        scores: an array `(N, K)`, K >= 2: logits, or probabilities with
            `from_logits=False` (clipped at 1e-30 before their logarithm).
        labels: integer labels `(N,)` or `(N, 1)` in `[0, K)`, or one-hot
            labels `(N, K)`.
        from_logits: bool, whether `scores` are logits. Defaults to `True`.

    Returns:
        A Python float in `[0.01, 100]`, the temperature; an end of that
        range when the optimum lies beyond it, `1.0` when no temperature
        changes the NLL (every row of scores constant).

    Raises:
        TypeError: if `from_logits` is not a bool.
        ValueError: if `scores` is not a finite `(N, K)` array with N >= 1
            and K >= 2, if `from_logits=False` and its rows are not
            probabilities, or if `labels` do not match it.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> labels = np.array([0, 1, 1, 0])
    >>> temperature = fit_temperature(logits, labels)
    >>> temperature > 1.0  # one confident mistake in four: soften
    True
    """
    from_logits = _validation.check_bool("from_logits", from_logits)
    scores = np.asarray(scores, dtype="float64")
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ValueError(
            "Argument `scores` must be an array (N, K) with N >= 1 rows and "
            f"K >= 2 classes, got shape {scores.shape}."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"Argument `scores` holds {int(np.sum(~np.isfinite(scores)))} NaN or "
            "infinite values; every score must be finite."
        )
    if not from_logits:
        _check_probabilities(scores)
        scores = np.log(np.clip(scores, TINY, 1.0))
    labels = _validation.check_labels(np.asarray(labels), scores.shape[1], "labels")
    if len(labels) != len(scores):
        raise ValueError(
            "Arguments `scores` and `labels` must hold the same number of rows, "
            f"got {len(scores)} and {len(labels)}."
        )
    scores = scores - np.max(scores, axis=1, keepdims=True)
    true = scores[np.arange(len(labels)), labels]

    def slope(log_beta):
        """d NLL / d beta at beta = 1 / T: increasing in beta."""
        logits = np.exp(log_beta) * scores
        probs = np.exp(logits - np.max(logits, axis=1, keepdims=True))
        probs /= np.sum(probs, axis=1, keepdims=True)
        return float(np.mean(np.sum(probs * scores, axis=1) - true))

    if np.all(scores == 0.0):
        return 1.0
    low, high = -np.log(MAX_TEMPERATURE), -np.log(MIN_TEMPERATURE)
    if slope(low) >= 0.0:
        return MAX_TEMPERATURE
    if slope(high) <= 0.0:
        return MIN_TEMPERATURE
    for _ in range(_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if slope(middle) > 0.0:
            high = middle
        else:
            low = middle
    return float(np.exp(-0.5 * (low + high)))


def _check_probabilities(probs):
    sums = np.sum(probs, axis=1)
    if (
        np.min(probs) < -_validation.SUM_TOLERANCE
        or np.max(np.abs(sums - 1.0)) > _validation.SUM_TOLERANCE
    ):
        raise ValueError(
            "Argument `scores`: with `from_logits=False` every row must be "
            f"probabilities that sum to 1, got row sums from {np.min(sums):.4g} "
            f"to {np.max(sums):.4g} and a smallest value {np.min(probs):.4g}."
        )
