"""Hyperparameter search over the aggregation factor and the width, and its confirmation.

An optional part of `keras_agrlearn` built on KerasTuner: install it with
`pip install "keras-agrlearn[tuner]"`. `import keras_agrlearn` alone never
imports KerasTuner.
"""

from keras_agrlearn.tuning._confirm import confirm
from keras_agrlearn.tuning._hypermodel import AgrLearnHyperModel
from keras_agrlearn.tuning._leaderboard import leaderboard

__all__ = ["AgrLearnHyperModel", "confirm", "leaderboard"]
