"""Aggregated Learning (AgrLearn) for Keras 3.

n samples go through one (wider) network together and it predicts all n
labels. `wrap` turns a Keras classifier into such a model; `Aggregate` and
`Deaggregate` are the layers it inserts.
"""

from keras_agrlearn.aggregate import Aggregate
from keras_agrlearn.deaggregate import Deaggregate
from keras_agrlearn.model import AgrLearnModel
from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood
from keras_agrlearn.rebuild import scaled_width
from keras_agrlearn.wrap import wrap

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AgrLearnModel",
    "Deaggregate",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "scaled_width",
    "wrap",
]
