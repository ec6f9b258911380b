"""Aggregated Learning (AgrLearn) for Keras 3.

n samples go through one (wider) network together and it predicts all n
labels. `wrap` turns a Keras classifier into such a model; `Aggregate` and
`Deaggregate` are the layers it inserts. `members` exposes the n predictions
such a model averages, and `evaluate_uncertainty` scores accuracy,
calibration, member diversity and out-of-distribution detection.
`calibrate_temperature` tempers a model on validation data, and
`paired_comparison` says, from paired seeds, whether aggregation helps.
"""

from keras_agrlearn._aggregate import Aggregate
from keras_agrlearn._calibration import calibrate_temperature
from keras_agrlearn._comparison import paired_comparison
from keras_agrlearn._deaggregate import Deaggregate
from keras_agrlearn._evaluation import evaluate_uncertainty
from keras_agrlearn._members import members
from keras_agrlearn._mixed_encoders import MixedEncoders
from keras_agrlearn._mixing_decay import MixingDecay
from keras_agrlearn._model import AgrLearnModel
from keras_agrlearn._rebuild import scaled_width
from keras_agrlearn._temperature import fit_temperature
from keras_agrlearn._temperature_scaling import TemperatureScaling
from keras_agrlearn._wrap import wrap
from keras_agrlearn.metrics import BrierScore
from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood
from keras_agrlearn.version import __version__ as __version__

__all__ = [
    "Aggregate",
    "AgrLearnModel",
    "BrierScore",
    "Deaggregate",
    "ExpectedCalibrationError",
    "MixedEncoders",
    "MixingDecay",
    "NegativeLogLikelihood",
    "TemperatureScaling",
    "calibrate_temperature",
    "evaluate_uncertainty",
    "fit_temperature",
    "members",
    "paired_comparison",
    "scaled_width",
    "wrap",
]
