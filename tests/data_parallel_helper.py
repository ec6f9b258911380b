"""Trains one wrapped model on one device and data-parallel on two CPU devices.

Run as `python tests/data_parallel_helper.py jax|tensorflow`. Two virtual CPU
devices must be set up before the backend starts, hence a process of its own:
`XLA_FLAGS=--xla_force_host_platform_device_count=2` for JAX
(`keras.distribution.DataParallel`), two logical CPU devices for TensorFlow
(`tf.distribute.MirroredStrategy`). The last line printed is a JSON object with
the accuracies, the largest weight difference between the two runs, and
whether a per-device batch that is (not) a multiple of n raised a warning.
"""

import json
import os
import sys
import warnings

BACKEND = sys.argv[1] if __name__ == "__main__" else os.environ.get("KERAS_BACKEND")
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_agrlearn import wrap  # noqa: E402

N = 2
DEVICES = 2
# A per-device batch of 16 holds 8 whole groups of n = 2.
BATCH_SIZE = 32
BROKEN_BATCH_SIZE = 30


def _scope():
    if BACKEND == "jax":
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        return None
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()


def _setup_devices():
    if BACKEND == "jax":
        import jax

        assert len(jax.devices()) == DEVICES, jax.devices()
    else:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES
        )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = np.argmax(x[:, :3], axis=1).astype("int32")
    return x, y


def _train(distributed, batch_size=BATCH_SIZE, epochs=4, batch_repetition=1):
    keras.utils.set_random_seed(0)
    scope = _scope() if distributed else None
    if scope is not None:
        scope.__enter__()
    try:
        backbone = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
        # Random groupings are drawn per replica under MirroredStrategy, so
        # only the deterministic layout can match one device exactly.
        model = wrap(backbone, n=N, width=2.0, repetition=0.0, batch_repetition=batch_repetition)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    finally:
        if scope is not None:
            scope.__exit__(None, None, None)
    x, y = _data()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    accuracy = model.evaluate(x, y, batch_size=batch_size, verbose=0)[1]
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)
    return accuracy, weights


def main():
    _setup_devices()
    single_accuracy, single = _train(distributed=False)
    with warnings.catch_warnings(record=True) as kept:
        warnings.simplefilter("always")
        parallel_accuracy, parallel = _train(distributed=True)
    with warnings.catch_warnings(record=True) as broken:
        warnings.simplefilter("always")
        _train(distributed=True, batch_size=BROKEN_BATCH_SIZE, epochs=1)
    rule = [str(w.message) for w in broken if "per-device batch" in str(w.message)]
    # Batch repetition permutes each batch: the weights differ from one
    # device, but labels must stay aligned, so the model still learns.
    repeated_accuracy, _ = _train(distributed=True, batch_repetition=2)
    return {
        "parallel_batch_repetition_accuracy": float(repeated_accuracy),
        "single_accuracy": float(single_accuracy),
        "parallel_accuracy": float(parallel_accuracy),
        "max_weight_difference": float(
            max(np.max(np.abs(a - b)) for a, b in zip(single, parallel))
        ),
        "warned_on_broken_rule": bool(rule),
        "warning": rule[0] if rule else None,
        "warned_on_kept_rule": any("per-device batch" in str(w.message) for w in kept),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
