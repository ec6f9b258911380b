"""The `ExpectedCalibrationError` metric."""

import keras
from keras import ops

from keras_agrlearn import _validation
from keras_agrlearn.metrics import _labels


@keras.saving.register_keras_serializable(package="keras_agrlearn")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error (ECE) of the top-class confidence.

    Predictions are sorted into `num_bins` equal-width bins by their top-class
    probability (confidence). ECE is the sample-weighted mean, over bins, of
    the gap between the bin's accuracy and its mean confidence:
    `sum_b (n_b / N) * |acc_b - conf_b|`, the definition used by Guo et al.
    (2017) and by MIMO (15 bins). The per-bin sums are kept across batches, so
    the result over a dataset does not depend on how it was batched.

    Args:
        num_bins: int >= 1, the number of confidence bins. Defaults to `15`.
        from_logits: bool, whether `y_pred` holds logits (a softmax is applied)
            rather than probabilities. Defaults to `False`.
        name: str, the metric name. Defaults to `"ece"`.
        dtype: the metric's dtype. Defaults to `None` (float32).

    Call arguments (`update_state`):
        y_true: integer labels `(N,)` or `(N, 1)`, or one-hot targets `(N, K)`.
        y_pred: class probabilities (or logits) `(N, K)`.
        sample_weight: optional `(N,)` weights.

    Returns:
        `result()` is the ECE in `[0, 1]`, a float32 scalar.

    Raises:
        TypeError: if `num_bins` is not an integer (NumPy integers count) or
            `from_logits` not a bool.
        ValueError: if `num_bins` is below 1, or the number of classes of
            `y_pred` is unknown.

    Example:

    >>> import numpy as np
    >>> metric = ExpectedCalibrationError(num_bins=10)
    >>> metric.update_state([0, 1], np.array([[0.9, 0.1], [0.7, 0.3]]))
    >>> round(float(metric.result()), 4)
    0.4
    """

    def __init__(self, num_bins=15, from_logits=False, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        num_bins = _validation.check_num_bins(num_bins)
        self.num_bins = num_bins
        self.from_logits = _validation.check_bool("from_logits", from_logits)
        self.counts = self.add_variable(shape=(num_bins,), initializer="zeros", name="counts")
        self.confidences = self.add_variable(
            shape=(num_bins,), initializer="zeros", name="confidences"
        )
        self.corrects = self.add_variable(shape=(num_bins,), initializer="zeros", name="corrects")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probs, labels = _labels.probabilities_and_labels(y_true, y_pred, self.from_logits)
        confidence = ops.max(probs, axis=-1)
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int32"), labels), "float32"
        )
        weights = _labels.flat_weights(sample_weight, ops.shape(confidence)[0])
        # A confidence of exactly 1 belongs to the last bin, not one past it.
        bins = ops.minimum(ops.cast(confidence * self.num_bins, "int32"), self.num_bins - 1)
        membership = ops.one_hot(bins, self.num_bins, dtype="float32") * ops.expand_dims(
            weights, -1
        )
        self.counts.assign_add(ops.sum(membership, axis=0))
        self.confidences.assign_add(ops.matmul(confidence, membership))
        self.corrects.assign_add(ops.matmul(correct, membership))

    def result(self):
        gaps = ops.abs(self.corrects - self.confidences)
        return ops.divide_no_nan(ops.sum(gaps), ops.sum(self.counts))

    def get_config(self):
        config = super().get_config()
        config.update({"num_bins": self.num_bins, "from_logits": self.from_logits})
        return config
