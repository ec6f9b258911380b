"""AgrLearnModel: each slot's own loss, labels and sample weights spread over slots."""

import keras
import numpy as np
import pytest

from keras_agrlearn import AgrLearnModel
from keras_agrlearn import wrap

CLASSES = 3


def _model(objective, activation="softmax"):
    backbone = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(CLASSES, activation=activation),
        ]
    )
    return wrap(backbone, n=2, batch_repetition=2, repetition=0.5, objective=objective, seed=3)


def _cross_entropy(probs, labels, weights):
    picked = probs[np.arange(len(labels)), labels]
    return float(np.sum(-np.log(picked) * weights) / len(labels))


@pytest.mark.parametrize("weighted", [False, True])
def test_slots_objective_scores_every_slot(weighted, rng):
    model = _model("slots")
    assert isinstance(model, AgrLearnModel)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(5, 4)).astype("float32")
    y = rng.integers(0, CLASSES, size=5)
    weights = rng.uniform(0.5, 2.0, size=5).astype("float32") if weighted else None
    slots = keras.ops.convert_to_numpy(model(x, training=True))
    assert slots.shape == (5, 4, CLASSES)  # R = batch_repetition * n slots each
    loss = model.compute_loss(
        x, y, keras.ops.convert_to_tensor(slots), None if weights is None else weights
    )
    expected = _cross_entropy(
        slots.reshape(-1, CLASSES),
        np.repeat(y, 4),
        np.ones(20) if weights is None else np.repeat(weights, 4),
    )
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), expected, rtol=1e-5)


def test_mean_objective_scores_the_mean_of_the_slots(rng):
    model = _model("mean", activation=None)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = rng.normal(size=(5, 4)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(x, training=True))
    assert logits.shape == (5, CLASSES)


def test_training_metrics_see_one_row_per_sample(rng):
    model = _model("slots")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.normal(size=(6, 4)).astype("float32")
    y = rng.integers(0, CLASSES, size=6)
    slots = model(x, training=True)
    logs = model.compute_metrics(x, y, slots)
    mean = np.mean(keras.ops.convert_to_numpy(slots), axis=1)
    np.testing.assert_allclose(
        float(logs["accuracy"]), np.mean(np.argmax(mean, -1) == y), rtol=1e-6
    )


def test_one_hot_labels_and_outputs_outside_training(rng):
    model = _model("slots")
    model.compile(
        optimizer="adam", loss="categorical_crossentropy", metrics=["categorical_accuracy"]
    )
    x = rng.normal(size=(9, 4)).astype("float32")
    y = np.eye(CLASSES)[rng.integers(0, CLASSES, size=9)].astype("float32")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.predict(x, verbose=0).shape == (9, CLASSES)
    assert len(model.evaluate(x, y, verbose=0)) == 2
