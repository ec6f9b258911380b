"""Scoring a trained classifier: accuracy, negative log-likelihood and ECE."""

import numpy as np

from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood


def scores(model, x, y, batch_size=500):
    """Accuracy, NLL and ECE of `model`'s predictions on `(x, y)`, as floats."""
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    nll, ece = NegativeLogLikelihood(), ExpectedCalibrationError()
    nll.update_state(y, probs)
    ece.update_state(y, probs)
    return {
        "acc": float(np.mean(np.argmax(probs, -1) == y)),
        "nll": float(nll.result()),
        "ece": float(ece.result()),
    }
