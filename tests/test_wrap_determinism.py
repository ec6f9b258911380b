"""Determinism: with `keras.utils.set_random_seed`, two runs train identical weights.

Everything random is seeded from the global seed: initialisers, Dropout, the
shuffling of `fit`, and the permutation and repetition draws of `Aggregate`.
Asserted on all three backends on CPU; docs/RELIABILITY.md says what holds
on accelerators.
"""

import keras
import numpy as np

from keras_agrlearn import wrap


def train_once(x, y):
    keras.backend.clear_session()
    keras.utils.set_random_seed(11)
    backbone = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model = wrap(backbone, n=2, width=1.5, shuffle=True, repetition=0.25)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=True, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_two_seeded_runs_give_identical_weights(rng):
    x = rng.normal(size=(24, 6)).astype("float32")
    y = rng.integers(0, 3, size=24)
    first, second = train_once(x, y), train_once(x, y)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
