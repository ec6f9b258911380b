"""The `BrierScore` metric."""

import keras
from keras import ops

from keras_agrlearn import _validation
from keras_agrlearn.metrics import _labels


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class BrierScore(keras.metrics.Metric):
    """Mean squared distance between the class probabilities and the label.

    For each sample, `sum_k (p_k - y_k)^2` with `y` the one-hot label: 0 for a
    certain, correct prediction, 2 for a certain, wrong one. Unlike NLL it is
    bounded, so a few confidently wrong predictions cannot dominate it; it is
    the multi-class Brier score reported by uncertainty-baselines and
    torch-uncertainty (summed over classes, averaged over samples).

    Args:
        from_logits: bool, whether `y_pred` holds logits (a softmax is applied)
            rather than probabilities. Defaults to `False`.
        name: str, the metric name. Defaults to `"brier"`.
        dtype: the metric's dtype. Defaults to `None` (float32).

    Call arguments (`update_state`):
        y_true: integer labels `(N,)` or `(N, 1)`, or one-hot targets `(N, K)`
            (soft targets count as their argmax class, as in the other
            calibration metrics).
        y_pred: class probabilities (or logits) `(N, K)`.
        sample_weight: optional `(N,)` weights.

    Returns:
        `result()` is the weighted mean Brier score in `[0, 2]`, a float32
        scalar.

    Raises:
        TypeError: if `from_logits` is not a bool.
        ValueError: if the number of classes of `y_pred` is unknown.

    Example:

    >>> import numpy as np
    >>> metric = BrierScore()
    >>> metric.update_state([0, 1], np.array([[0.9, 0.1], [0.6, 0.4]]))
    >>> round(float(metric.result()), 4)
    0.37
    """

    def __init__(self, from_logits=False, name="brier", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = _validation.check_bool("from_logits", from_logits)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probs, labels = _labels.probabilities_and_labels(y_true, y_pred, self.from_logits)
        targets = ops.one_hot(labels, probs.shape[-1], dtype="float32")
        scores = ops.sum(ops.square(probs - targets), axis=-1)
        weights = _labels.flat_weights(sample_weight, ops.shape(scores)[0])
        self.total.assign_add(ops.sum(scores * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits})
        return config
