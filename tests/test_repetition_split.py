"""Batch repetition one repetition per layer call: the same values, fewer rows per call."""

import keras
import numpy as np
import pytest

from keras_agrlearn import Aggregate
from keras_agrlearn import _repetition_split
from keras_agrlearn import wrap

BATCH_REPETITION = 3


def _backbone():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _wrapped(objective, seed=0):
    keras.utils.set_random_seed(seed)
    return wrap(
        _backbone(), n=3, batch_repetition=BATCH_REPETITION, objective=objective, seed=seed
    )


def _count_calls(monkeypatch, layer):
    calls = []
    call = layer.call

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return call(*args, **kwargs)

    monkeypatch.setattr(layer, "call", counted)
    return calls


@pytest.mark.parametrize("objective", ["mean", "slots"])
@pytest.mark.parametrize("batch", [1, 7, 9])
def test_split_call_gives_the_values_of_one_call(monkeypatch, objective, batch, rng):
    model = _wrapped(objective)
    aggregate = next(layer for layer in model.layers if isinstance(layer, Aggregate))
    conv = model.get_layer("conv")
    x = rng.normal(size=(batch, 8, 8, 1)).astype("float32")
    state = keras.ops.convert_to_numpy(aggregate.seed_generator.state)

    monkeypatch.setattr(_repetition_split, "splits_repetitions", lambda: False)
    calls = _count_calls(monkeypatch, conv)
    whole = keras.ops.convert_to_numpy(model(x, training=True))
    rows = calls[0]
    assert len(calls) == 1

    aggregate.seed_generator.state.assign(state)
    monkeypatch.setattr(_repetition_split, "splits_repetitions", lambda: True)
    calls.clear()
    split = keras.ops.convert_to_numpy(model(x, training=True))
    # One call per repetition, each on a third of the rows.
    assert calls == [rows // BATCH_REPETITION] * BATCH_REPETITION
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)

    calls.clear()
    model(x, training=False)  # inference has no repetitions: one call
    assert len(calls) == 1


def _fit_weights(monkeypatch, split, x, y):
    monkeypatch.setattr(_repetition_split, "splits_repetitions", lambda: split)
    model = _wrapped("mean", seed=1)
    calls = _count_calls(monkeypatch, model.get_layer("conv"))
    # Static batch shapes on every backend, so that TensorFlow splits too.
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        run_eagerly=keras.backend.backend() == "tensorflow",
    )
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights], len(calls)


def test_split_training_learns_the_same_weights(monkeypatch, rng):
    x = rng.normal(size=(20, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=20)
    whole, whole_calls = _fit_weights(monkeypatch, False, x, y)
    split, split_calls = _fit_weights(monkeypatch, True, x, y)
    assert split_calls > whole_calls  # the training steps did split
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_only_jax_on_cpu_splits_without_a_distribution():
    expected = keras.backend.backend() == "jax" and all(
        d.startswith("cpu") for d in keras.distribution.list_devices()
    )
    assert _repetition_split.splits_repetitions() == expected
    if keras.backend.backend() == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            assert not _repetition_split.splits_repetitions()
        finally:
            keras.distribution.set_distribution(None)


def test_repetitions_reads_the_aggregate_layers():
    assert _repetition_split.repetitions(_wrapped("mean")) == BATCH_REPETITION
    assert _repetition_split.repetitions(wrap(_backbone(), n=3, batch_repetition=1)) == 1
    assert _repetition_split.repetitions(_backbone()) == 1
