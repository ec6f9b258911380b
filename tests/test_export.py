"""Deployment: exported wrapped models reproduce `predict`.

SavedModel export (`model.export(path)`) is tested under TensorFlow, ONNX
export (`model.export(path, format="onnx")`, checked with onnxruntime) under
PyTorch, where Keras exports through `torch.onnx`, and under TensorFlow, where
it goes through tf2onnx (both in the `onnx` extra). Under JAX it is not
supported (see the skip reason).
"""

import keras
import numpy as np
import pytest

import keras_agrlearn

BACKEND = keras.backend.backend()
INFERENCE = ["replicate", "group"]
# Batches of several sizes, one of them leaving a last, partial group.
BATCHES = (4, 5, 1)


def wrapped(inference):
    backbone = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model = keras_agrlearn.wrap(backbone, n=2, width=1.0, inference=inference)
    # Keras exports only a model that has been called once.
    model.predict(inputs(4), verbose=0)
    return model


def inputs(batch):
    return np.random.default_rng(batch).normal(size=(batch, 6)).astype("float32")


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="SavedModel export is tested under the TensorFlow backend"
)
@pytest.mark.parametrize("inference", INFERENCE)
def test_saved_model_reproduces_predict(inference, tmp_path):
    import tensorflow as tf

    model = wrapped(inference)
    path = str(tmp_path / "saved_model")
    model.export(path, verbose=False)
    served = tf.saved_model.load(path)
    for batch in BATCHES:
        x = inputs(batch)
        np.testing.assert_allclose(
            served.serve(x).numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
        )


@pytest.mark.skipif(
    BACKEND == "jax",
    reason="not supported under JAX: Keras exports through jax2onnx, which traces with an "
    "unknown batch size, and Aggregate plans its gather from the concrete batch size",
)
@pytest.mark.parametrize("inference", INFERENCE)
def test_onnx_reproduces_predict(inference, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    if BACKEND != "torch":
        pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    model = wrapped(inference)
    # Keras exports to ONNX only a model that has been called directly (`predict`
    # does not count under JAX).
    model(inputs(1))
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path)
    name = session.get_inputs()[0].name
    for batch in BATCHES:
        x = inputs(batch)
        (served,) = session.run(None, {name: x})
        np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
