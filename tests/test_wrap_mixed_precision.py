"""Mixed precision: a wrapped model trains and predicts, with float32 outputs.

The per-sample output activation runs in float32, so the probabilities sum to
one to float32 precision, not only to that of float16 or bfloat16.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import wrap


@pytest.fixture
def policy(request):
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_mixed_precision_trains_and_predicts(policy, rng):
    backbone = keras.Sequential(
        [
            keras.Input((8, 2)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax", name="scores"),
        ]
    )
    model = wrap(backbone, n=2, width=1.5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(10, 8, 2)).astype("float32")
    y = rng.integers(0, 3, size=10)

    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    predicted = model.predict(x, batch_size=4, verbose=0)

    half = policy.split("_")[1]
    assert model.get_layer("scores_slots").compute_dtype == half
    assert model.layers[-1].compute_dtype == "float32"
    assert predicted.dtype == np.float32 and predicted.shape == (10, 3)
    assert np.isfinite(history.history["loss"][0]) and np.all(np.isfinite(predicted))
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-6)
