"""Calibration metrics for classifiers: negative log-likelihood, ECE and Brier score."""

from keras_agrlearn.metrics._brier_score import BrierScore
from keras_agrlearn.metrics._expected_calibration_error import ExpectedCalibrationError
from keras_agrlearn.metrics._negative_log_likelihood import NegativeLogLikelihood

__all__ = ["BrierScore", "ExpectedCalibrationError", "NegativeLogLikelihood"]
