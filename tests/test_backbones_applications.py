"""`wrap` on keras.applications backbones (weights=None, 32x32 inputs).

These graphs have hundreds of layers: compiling a train step for them costs
minutes on CPU, so each model trains and predicts eagerly here; the compiled
paths are covered by the small backbones in test_backbones.py.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

CLASSES = 3

APPLICATIONS = {
    "ResNet50": keras.applications.ResNet50,
    "DenseNet121": keras.applications.DenseNet121,
    # Head: a 1x1 Conv2D on pooled features, then Flatten and softmax.
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    # Rescaling and a per-channel Normalization inside; squeeze-excitation Reshapes.
    "EfficientNetB0": keras.applications.EfficientNetB0,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_application_wraps_trains_and_predicts_per_sample(name, rng):
    backbone = APPLICATIONS[name](weights=None, input_shape=(32, 32, 3), classes=CLASSES)
    model = wrap(backbone, n=2, width=0.25)
    assert sum(isinstance(layer, Deaggregate) for layer in model.layers) == 1
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    x = (rng.random((4, 32, 32, 3)) * 255).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = keras.ops.convert_to_numpy(model(x, training=False))
    assert predictions.shape == (4, CLASSES)
    np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-4)
    alone = keras.ops.convert_to_numpy(model(x[2:3], training=False))
    np.testing.assert_allclose(alone[0], predictions[2], atol=1e-4)
