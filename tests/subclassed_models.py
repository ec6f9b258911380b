"""Small subclassed models that several test files wrap."""

import keras
import numpy as np


class Features(keras.Model):
    """A subclassed feature extractor: no classification layer of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, inputs):
        return self.pool(self.conv(inputs))


class Untraceable(Features):
    """A call that needs concrete tensors, as with backend-specific code."""

    def call(self, inputs):
        if isinstance(inputs, keras.KerasTensor):
            raise TypeError("this call needs concrete tensors")
        return super().call(inputs)


def built(model_class, name):
    """A `model_class` model called once on a (1, 6, 6, 2) batch."""
    model = model_class(name=name)
    model(np.zeros((1, 6, 6, 2), "float32"))
    return model
