"""Saves a wrapped model under one backend and checks those saved under others.

Run as `KERAS_BACKEND=<backend> python tests/portable_model_helper.py DIR
[BACKEND ...]`, or call `exchange(DIR, wait)` from a process whose backend is
already set. Each backend leaves in DIR a `.keras` file, a weights-only
checkpoint, its inputs and its own predictions, then a `<backend>.done`
marker; it waits for the markers of the backends named on the command line,
loads every other backend's files and records the largest difference from
that backend's predictions. The last line printed is the JSON of those
differences.
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_agrlearn import wrap  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
# Each variant: the inference protocol, and `-cut` for feature mixing.
VARIANTS = ("replicate", "group", "replicate-cut")
WAIT_SECONDS = 400


def build(variant):
    inference, _, mixing = variant.partition("-")
    backbone = keras.Sequential(
        [
            keras.Input((12, 2)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return wrap(
        backbone,
        n=2,
        width=1.5,
        inference=inference,
        shuffle=True,
        seed=5,
        mixing=mixing or "sum",
        objective="slots" if mixing else None,
    )


def _paths(directory, backend, variant):
    stem = pathlib.Path(directory) / f"{backend}_{variant}"
    return {
        "model": f"{stem}.keras",
        "weights": f"{stem}.weights.h5",
        "arrays": f"{stem}.npz",
    }


def _save(directory, variant):
    paths = _paths(directory, keras.backend.backend(), variant)
    keras.utils.set_random_seed(7)
    x = np.random.default_rng(3).normal(size=(7, 12, 2)).astype("float32")
    y = np.arange(7) % 3
    model = build(variant)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # One training step moves the BatchNormalization statistics off their
    # initial values, so the saved state is not the trivial one.
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.savez(paths["arrays"], x=x, predicted=model.predict(x, batch_size=4, verbose=0))
    model.save(paths["model"])
    model.save_weights(paths["weights"])


def _check(directory, backend, variant):
    paths = _paths(directory, backend, variant)
    arrays = np.load(paths["arrays"])
    # compile=False: a file saved under JAX records jit_compile=True, which
    # PyTorch would turn into torch.compile, minutes on CPU.
    loaded = keras.saving.load_model(paths["model"], compile=False)
    from_model = loaded.predict(arrays["x"], batch_size=4, verbose=0)
    fresh = build(variant)
    fresh.load_weights(paths["weights"])
    from_weights = fresh.predict(arrays["x"], batch_size=4, verbose=0)
    return {
        "model": float(np.max(np.abs(from_model - arrays["predicted"]))),
        "weights": float(np.max(np.abs(from_weights - arrays["predicted"]))),
    }


def check_others(directory):
    """Loads every other backend's finished files found in `directory`.

    Returns a dict `{"<backend>_<variant>": {"model": diff, "weights": diff}}`
    with the largest absolute prediction difference per loaded file.
    """
    me = keras.backend.backend()
    return {
        f"{backend}_{variant}": _check(directory, backend, variant)
        for backend in BACKENDS
        if backend != me and os.path.exists(os.path.join(directory, f"{backend}.done"))
        for variant in VARIANTS
    }


def exchange(directory, wait=()):
    """Saves this backend's files, waits for those of `wait`, checks all others."""
    for variant in VARIANTS:
        _save(directory, variant)
    pathlib.Path(directory, f"{keras.backend.backend()}.done").touch()
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(os.path.exists(os.path.join(directory, f"{b}.done")) for b in wait):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no files from {wait} in {directory}")
        time.sleep(0.5)
    return check_others(directory)


if __name__ == "__main__":
    print(json.dumps(exchange(sys.argv[1], sys.argv[2:])))
