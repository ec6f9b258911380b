"""`wrap` on a keras-hub image classifier built from a config (no download).

keras-hub's `ImageClassifier` tasks are Functional models, so `wrap` rebuilds
them layer by layer like any other; their head returns logits by default,
and the wrapped head does too.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

keras_hub = pytest.importorskip("keras_hub")

CLASSES = 3


def resnet_classifier():
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def test_keras_hub_classifier_wraps_trains_and_predicts_per_sample(rng, capsys):
    classifier = resnet_classifier()
    model = wrap(classifier, n=2, width=0.5, verbose=True)
    assert "strategy='rebuild'" in capsys.readouterr().out
    assert sum(isinstance(layer, Deaggregate) for layer in model.layers) == 1
    assert model.output_shape == classifier.output_shape == (None, CLASSES)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=keras.backend.backend() != "jax",
    )
    x = (rng.random((4, 32, 32, 3)) * 255).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logits = model.predict(x, batch_size=4, verbose=0)
    assert logits.shape == (4, CLASSES) and np.all(np.isfinite(logits))
    # A logits head stays a logits head: rows are not probabilities.
    assert not np.allclose(logits.sum(-1), 1.0)
    reordered = model.predict(x[::-1], batch_size=4, verbose=0)
    np.testing.assert_allclose(reordered[::-1], logits, rtol=1e-4, atol=1e-4)
