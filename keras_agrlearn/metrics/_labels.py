"""Label and probability handling shared by the calibration metrics."""

from keras import ops


def probabilities_and_labels(y_true, y_pred, from_logits):
    """Per-sample class probabilities `(N, K)` and integer labels `(N,)`.

    `y_true` holds integer labels (any shape that flattens to N) or one-hot /
    soft targets of the same shape as `y_pred`, in which case the label is the
    argmax. Leading axes of `y_pred` are flattened, so sequence outputs work.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    classes = y_pred.shape[-1]
    if classes is None:
        raise ValueError(
            "Calibration metrics need a known number of classes (the last axis "
            f"of `y_pred`), got shape {tuple(y_pred.shape)}."
        )
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1, classes))
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=-1)
    y_true = ops.convert_to_tensor(y_true)
    one_hot = len(y_true.shape) >= 2 and y_true.shape[-1] == classes and classes > 1
    if one_hot:
        labels = ops.argmax(ops.reshape(y_true, (-1, classes)), axis=-1)
    else:
        labels = ops.reshape(y_true, (-1,))
    return y_pred, ops.cast(labels, "int32")


def flat_weights(sample_weight, count):
    """Sample weights as a float32 `(N,)` vector, ones when none are given."""
    if sample_weight is None:
        return ops.ones((count,), dtype="float32")
    weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.broadcast_to(weights, (count,))
