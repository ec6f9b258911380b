"""Calibration metrics for classifiers: negative log-likelihood and ECE."""

from keras_agrlearn.metrics.expected_calibration_error import ExpectedCalibrationError
from keras_agrlearn.metrics.negative_log_likelihood import NegativeLogLikelihood

__all__ = ["ExpectedCalibrationError", "NegativeLogLikelihood"]
