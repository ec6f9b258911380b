"""Resume: training interrupted and resumed with BackupAndRestore matches an
uninterrupted run.

The backup holds the weights and the optimizer state. Keras writes no
`SeedGenerator` state into weights files, so a model that draws random
numbers while training (`Aggregate(shuffle=True)`, Dropout) restarts its
draws after a resume; that case is an expected failure until `Aggregate`
saves its generator's state.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import wrap

EPOCHS = 4
INTERRUPT_AFTER = 2


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == INTERRUPT_AFTER:
            raise KeyboardInterrupt


def train(x, y, backup_dir, shuffle, interrupt=False):
    keras.backend.clear_session()
    keras.utils.set_random_seed(5)
    backbone = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model = wrap(backbone, n=2, shuffle=shuffle, seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir))]
    if interrupt:
        callbacks.append(Interrupt())
    history = model.fit(
        x, y, batch_size=8, epochs=EPOCHS, shuffle=False, callbacks=callbacks, verbose=0
    )
    return model, history


@pytest.mark.parametrize("shuffle", [False, True], ids=["fixed-groups", "aggregate-shuffle"])
def test_resumed_training_matches_uninterrupted(shuffle, tmp_path, rng):
    x = rng.normal(size=(24, 6)).astype("float32")
    y = rng.integers(0, 3, size=24)
    reference, reference_history = train(x, y, tmp_path / "reference", shuffle)

    with pytest.raises(KeyboardInterrupt):
        train(x, y, tmp_path / "resumed", shuffle, interrupt=True)
    resumed, resumed_history = train(x, y, tmp_path / "resumed", shuffle)

    assert resumed_history.epoch == list(range(INTERRUPT_AFTER, EPOCHS))
    np.testing.assert_allclose(
        resumed_history.history["loss"],
        reference_history.history["loss"][INTERRUPT_AFTER:],
        rtol=1e-6,
    )
    for a, b in zip(resumed.weights, reference.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7
        )
