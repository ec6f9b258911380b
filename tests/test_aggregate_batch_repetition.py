"""Batch repetition: every training batch grouped b times, labels aligned."""

import keras
import numpy as np
import pytest

from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

CLASSES = 4


@pytest.mark.parametrize("repetition", [0.0, 0.5])
@pytest.mark.parametrize("batch_repetition", [2, 3])
@pytest.mark.parametrize("batch", [1, 2, 7, 12])
def test_every_sample_sits_in_b_groups_and_reads_back(batch, batch_repetition, repetition, rng):
    n = 3
    aggregate = Aggregate(n, repetition=repetition, batch_repetition=batch_repetition, seed=5)
    x = rng.normal(size=(batch, 2)).astype("float32")
    y, readout = aggregate(x, training=True, return_readout=True)
    y, readout = keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(readout)
    slots = y.reshape(-1, 2)
    assert len(slots) % (n * batch_repetition) == 0
    # Each sample owns n positions per grouping (its own slot n times, or
    # the n slots of a repeated group), so R = b * n with input repetition.
    assert readout.shape == (batch, batch_repetition * (n if repetition else 1))
    for sample in range(batch):
        np.testing.assert_array_equal(
            slots[readout[sample]], np.broadcast_to(x[sample], (readout.shape[1], 2))
        )
    for objective, expected_shape in (("mean", x.shape), ("slots", (batch, readout.shape[1], 2))):
        back = Deaggregate(n, objective=objective)(y, readout=readout, training=True)
        back = keras.ops.convert_to_numpy(back)
        assert back.shape == expected_shape
        np.testing.assert_allclose(
            back.reshape(batch, -1, 2),
            np.broadcast_to(x[:, None], (batch, back.size // (2 * batch), 2)),
            rtol=1e-6,
        )


def test_groupings_are_independent_permutations():
    x = np.arange(12, dtype="float32").reshape(12, 1)
    y, _ = Aggregate(3, repetition=0.0, batch_repetition=3, seed=0)(
        x, training=True, return_readout=True
    )
    y = keras.ops.convert_to_numpy(y)
    first, second, third = np.split(y, 3)
    for grouping in (first, second, third):
        assert sorted(grouping.ravel().tolist()) == list(range(12))
    groups = [{frozenset(row.tolist()) for row in g} for g in (first, second, third)]
    assert groups[0] != groups[1] and groups[1] != groups[2]


def test_inference_is_unchanged(rng):
    x = rng.normal(size=(7, 3)).astype("float32")
    for inference in ("group", "replicate"):
        plain = Aggregate(3, inference=inference)(x, training=False)
        repeated = Aggregate(3, inference=inference, batch_repetition=4)(x, training=False)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(plain), keras.ops.convert_to_numpy(repeated)
        )


def _learnable(rng, samples=60):
    """Labels written into the inputs: misaligned labels cannot be learned."""
    y = rng.integers(0, CLASSES, size=samples)
    x = np.concatenate([np.eye(CLASSES)[y], 0.1 * rng.normal(size=(samples, 2))], axis=1)
    return x.astype("float32"), y


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_repetition": 3, "repetition": 0.5, "objective": "slots"},
        {"batch_repetition": 2, "repetition": 0.0, "objective": "mean", "shuffle": True},
        {"batch_repetition": 2, "repetition": 0.5, "objective": "mean", "inference": "group"},
    ],
    ids=["slots", "mean-shuffle", "mean-group"],
)
def test_labels_stay_aligned_in_fit(kwargs, jit_compile, rng):
    x, y = _learnable(rng)
    backbone = keras.Sequential(
        [keras.Input((CLASSES + 2,)), keras.layers.Dense(CLASSES, activation="softmax")]
    )
    model = wrap(backbone, n=3, seed=0, **kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    # Batches of 7 (and a last one of 4) are not multiples of n.
    history = model.fit(x, y, batch_size=7, epochs=15, shuffle=True, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    predicted = model.predict(x, batch_size=7, verbose=0)
    assert predicted.shape == (len(x), CLASSES) and np.all(np.isfinite(predicted))
    assert np.mean(np.argmax(predicted, -1) == y) > 0.95


def test_batch_of_one_trains(rng):
    x, y = _learnable(rng, samples=5)
    backbone = keras.Sequential(
        [keras.Input((CLASSES + 2,)), keras.layers.Dense(CLASSES, activation="softmax")]
    )
    model = wrap(backbone, n=3, batch_repetition=3, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_saved_model_keeps_the_options(tmp_path, rng):
    backbone = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model = wrap(backbone, n=2, batch_repetition=3, repetition=0.25, objective="mean", seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(10, 5)).astype("float32")
    model.fit(x, rng.integers(0, 3, 10), batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert type(restored) is type(model)
    aggregate = next(layer for layer in restored.layers if isinstance(layer, Aggregate))
    assert (aggregate.batch_repetition, aggregate.repetition) == (3, 0.25)
    deaggregate = next(layer for layer in restored.layers if isinstance(layer, Deaggregate))
    assert deaggregate.objective == "mean"
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_several_aggregation_points_settle_one_shared_grouping():
    a, b = keras.Input((3,)), keras.Input((3,))
    two_inputs = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    # The defaults become one deterministic grouping shared by both inputs.
    model = wrap(two_inputs, n=2)
    aggregates = [layer for layer in model.layers if isinstance(layer, Aggregate)]
    assert [(layer.repetition, layer.batch_repetition) for layer in aggregates] == [(0.0, 1)]
    assert model.output_shape == (None, 2)
