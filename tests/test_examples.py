"""The examples run offline at tiny sizes; CIFAR-10 is read from mocked data."""

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_agrlearn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cifar():
    return load_example("cifar10_resnet")


@pytest.mark.parametrize("augment", [False, True])
def test_cifar10_loader_with_mock_data(cifar, augment):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        raw = next(iter(tfds.load("cifar10", split="train", as_supervised=True).batch(6)))
        images, labels = next(iter(cifar.load_cifar10("train", 6, augment=augment, seed=0)))
    images, labels = np.asarray(images), np.asarray(labels)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (6,) and set(labels) <= set(range(10))
    expected = (np.asarray(raw[0]) / 255.0 - cifar.MEAN) / cifar.STD
    if augment:
        # Crops of the zero-padded image keep values from the image or padding.
        padding = (0.0 - np.asarray(cifar.MEAN)) / cifar.STD
        allowed = np.concatenate([expected.reshape(-1, 3), padding[None]])
        assert np.isin(np.round(images.reshape(-1, 3), 4), np.round(allowed, 4)).all()
    else:
        np.testing.assert_allclose(images, expected, atol=1e-5)
        np.testing.assert_array_equal(labels, np.asarray(raw[1]))


def test_resnet18_matches_the_paper_and_wraps(cifar):
    model = cifar.resnet18()
    # The CIFAR ResNet-18 of He et al. has 11,173,962 trainable parameters.
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_173_962
    wrapped = keras_agrlearn.wrap(model, n=2, width=0.25)
    assert wrapped.output_shape == (None, 10)
    assert wrapped.get_layer("stem_conv").kernel.shape == (3, 3, 6, 16)


def test_quickstart_digits_runs():
    plain, aggregated = load_example("quickstart_digits").main(["--epochs", "1"])
    assert 0.0 <= plain <= 1.0 and 0.0 <= aggregated <= 1.0


def test_mnist1d_example_runs():
    example = load_example("mnist1d")
    (x, y), (x_test, y_test) = example.load_mnist1d(num_samples=200)
    assert x.shape == (160, 40, 1) and x_test.shape == (40, 40, 1)
    assert x.dtype == np.float32 and set(np.unique(y)) <= set(range(10))
    keras.backend.clear_session()
    results = example.main(["--samples", "200", "--epochs", "1", "--width", "1", "--batch-size", "40"])
    assert set(results) == {"plain", "replicate", "contextual", "group"}
    for scores in results.values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and scores["nll"] > 0
