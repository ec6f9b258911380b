"""`wrap` on keras.applications backbones (weights=None, 32x32 inputs).

These graphs have hundreds of layers. TensorFlow and PyTorch train and
predict them eagerly (seconds each on CPU); JAX compiles the train and predict
steps instead, since op-by-op JAX compiles every new operation shape and takes
far longer: about a minute for ResNet50 and MobileNetV3Small, two to four for
DenseNet121 and EfficientNetB0, which therefore run on JAX only as slow tests.
The compiled paths of the other backends are covered by the small backbones in test_rebuild.py.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

CLASSES = 3
# Op-by-op JAX compiles every new op shape: a jitted step is far quicker there.
EAGER = keras.backend.backend() != "jax"

APPLICATIONS = {
    "ResNet50": keras.applications.ResNet50,
    "DenseNet121": keras.applications.DenseNet121,
    # Head: a 1x1 Conv2D on pooled features, then Flatten and softmax.
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    # Rescaling and a per-channel Normalization inside; squeeze-excitation Reshapes.
    "EfficientNetB0": keras.applications.EfficientNetB0,
}


# Compiling DenseNet121's and EfficientNetB0's train steps takes minutes on a
# small CPU, so under JAX those two run only with AGRLEARN_SLOW_TESTS=1.
SLOW_ON_JAX = ("DenseNet121", "EfficientNetB0")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow)
        if keras.backend.backend() == "jax" and name in SLOW_ON_JAX
        else name
        for name in sorted(APPLICATIONS)
    ],
)
def test_application_wraps_trains_and_predicts_per_sample(name, rng):
    backbone = APPLICATIONS[name](weights=None, input_shape=(32, 32, 3), classes=CLASSES)
    model = wrap(backbone, n=2, width=0.25)
    assert sum(isinstance(layer, Deaggregate) for layer in model.layers) == 1
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=EAGER)
    x = (rng.random((4, 32, 32, 3)) * 255).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = model.predict(x, batch_size=4, verbose=0)
    assert predictions.shape == (4, CLASSES)
    np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-4)
    # Per sample: other companions in the batch change nothing (same shape,
    # so no second compilation).
    reordered = model.predict(x[::-1], batch_size=4, verbose=0)
    np.testing.assert_allclose(reordered[::-1], predictions, atol=1e-4)
