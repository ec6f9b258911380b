"""The `NegativeLogLikelihood` metric."""

import keras
from keras import ops

from keras_agrlearn import _validation
from keras_agrlearn.metrics import _labels


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class NegativeLogLikelihood(keras.metrics.Metric):
    """Mean negative log-probability of the true class (NLL).

    The calibration-aware counterpart of accuracy: a confident wrong prediction
    costs much more than a hesitant one. Probabilities are clipped to
    `[epsilon, 1]` so that a zero probability gives a large finite value rather
    than infinity, which would poison every later batch of the running mean.

    Args:
        from_logits: bool, whether `y_pred` holds logits (a softmax is applied)
            rather than probabilities. Defaults to `False`.
        epsilon: finite float > 0, the smallest probability used. Defaults to `1e-7`.
        name: str, the metric name. Defaults to `"nll"`.
        dtype: the metric's dtype. Defaults to `None` (float32).

    Call arguments (`update_state`):
        y_true: integer labels `(N,)` or `(N, 1)`, or one-hot targets `(N, K)`.
        y_pred: class probabilities (or logits) `(N, K)`.
        sample_weight: optional `(N,)` weights.

    Returns:
        `result()` is the weighted mean NLL in nats, a float32 scalar.

    Raises:
        TypeError: if `epsilon` is not a number or `from_logits` not a bool.
        ValueError: if `epsilon` is not finite and > 0, or the number of
            classes of `y_pred` is unknown.

    Example:

    >>> import numpy as np
    >>> metric = NegativeLogLikelihood()
    >>> metric.update_state([0, 1], np.array([[0.5, 0.5], [0.2, 0.8]]))
    >>> round(float(metric.result()), 4)
    0.4581
    """

    def __init__(self, from_logits=False, epsilon=1e-7, name="nll", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = _validation.check_bool("from_logits", from_logits)
        self.epsilon = _validation.check_epsilon(epsilon)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probs, labels = _labels.probabilities_and_labels(y_true, y_pred, self.from_logits)
        true_prob = ops.take_along_axis(probs, ops.expand_dims(labels, -1), axis=-1)
        losses = -ops.log(ops.clip(ops.squeeze(true_prob, -1), self.epsilon, 1.0))
        weights = _labels.flat_weights(sample_weight, ops.shape(losses)[0])
        self.total.assign_add(ops.sum(losses * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "epsilon": self.epsilon})
        return config
