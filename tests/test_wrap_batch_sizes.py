"""Every batch size works in fit, evaluate and predict, and rows stay aligned.

With n = 3 the sizes cover B = 1, B < n, B = n, B not a multiple of n and a
large B (64, also not a multiple). Alignment is checked against a reference
prediction of the whole set: replicate inference must give every sample the
same row whatever the batch, group inference the same row for every sample
in a complete group, and the loss of `evaluate` must match the labels applied
to the rows of `predict`.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import wrap

N = 3
CLASSES = 3
BATCH_SIZES = (1, 2, 3, 7, 64)


def make_model(inference, jit_compile):
    backbone = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    # One grouping per batch, so that training lays a batch out exactly as
    # group inference does (batch repetition is tested on its own).
    model = wrap(backbone, n=N, inference=inference, seed=0, batch_repetition=1)
    # A zero learning rate keeps the weights fixed, so every batch below is
    # compared with one reference prediction, while fit still runs its step.
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    return model


def cross_entropy(probabilities, labels):
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(picked)))


def test_every_batch_size_in_fit_evaluate_predict(jit_compile, rng):
    x = rng.normal(size=(max(BATCH_SIZES), 4)).astype("float32")
    y = rng.integers(0, CLASSES, size=len(x))
    model = make_model("group", jit_compile)
    reference = model.predict(x, batch_size=len(x), verbose=0)
    for batch in BATCH_SIZES:
        xb, yb = x[:batch], y[:batch]
        history = model.fit(xb, yb, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        eval_loss = model.evaluate(xb, yb, batch_size=batch, verbose=0)
        predicted = model.predict(xb, batch_size=batch, verbose=0)

        assert predicted.shape == (batch, CLASSES), batch
        assert np.all(np.isfinite(predicted)), batch
        np.testing.assert_allclose(eval_loss, cross_entropy(predicted, yb), rtol=1e-4, atol=1e-5)
        # Training groups a batch exactly as group inference does.
        np.testing.assert_allclose(history.history["loss"][0], eval_loss, rtol=1e-4, atol=1e-5)
        complete = batch // N * N
        np.testing.assert_allclose(predicted[:complete], reference[:complete], rtol=1e-5, atol=1e-6)


# Training lays out a batch the same way whatever the inference protocol, so
# the protocols below are checked in evaluate and predict only.
@pytest.mark.parametrize("inference", ["replicate", "contextual"])
def test_every_batch_size_in_evaluate_predict(inference, jit_compile, rng):
    x = rng.normal(size=(max(BATCH_SIZES), 4)).astype("float32")
    y = rng.integers(0, CLASSES, size=len(x))
    model = make_model(inference, jit_compile)
    reference = model.predict(x, batch_size=len(x), verbose=0)
    # Contextual inference compiles slowly under XLA; its companion draw has
    # its edge cases at B = 1 (every companion is the sample) and B < draws.
    sizes = BATCH_SIZES if inference == "replicate" else (1, 2, 64)
    for batch in sizes:
        xb, yb = x[:batch], y[:batch]
        eval_loss = model.evaluate(xb, yb, batch_size=batch, verbose=0)
        predicted = model.predict(xb, batch_size=batch, verbose=0)

        assert predicted.shape == (batch, CLASSES), batch
        assert np.all(np.isfinite(predicted)) and np.isfinite(eval_loss), batch
        np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-5)
        if inference == "replicate":
            np.testing.assert_allclose(
                eval_loss, cross_entropy(predicted, yb), rtol=1e-4, atol=1e-5
            )
            np.testing.assert_allclose(predicted, reference[:batch], rtol=1e-5, atol=1e-6)
    if inference == "replicate":
        # Several batches, the last one partial: rows still follow the samples.
        predicted = model.predict(x[:10], batch_size=4, verbose=0)
        np.testing.assert_allclose(predicted, reference[:10], rtol=1e-5, atol=1e-6)
