"""experiments/datasets.py and experiments/backbones.py: the shared offline
loaders and reference backbones of the studies, the tuning job and the
benchmarks. (The IDX reader and the MNIST-1D generator are tested with the
uncertainty study, test_uncertainty_experiment.py.)"""

import numpy as np
import pytest

from experiments import backbones
from experiments import datasets


def test_load_digits_splits():
    (x, y), (xv, yv), (xt, yt) = datasets.load_digits()
    assert x.shape[1:] == (8, 8, 1) and (len(x), len(xv), len(xt)) == (1077, 360, 360)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and set(np.unique(y)) == set(range(10))


def test_load_mnist1d_offline_and_cached(tmp_path):
    (x, y), (xv, yv), (xt, yt) = datasets.load_mnist1d(100, tmp_path)
    assert x.shape == (64, 40, 1) and xv.shape == (16, 40, 1) and xt.shape == (20, 40, 1)
    assert set(np.unique(y)) <= set(range(10))
    assert (tmp_path / "mnist1d_100.npz").exists()
    (again, _), _, _ = datasets.load_mnist1d(100, tmp_path)
    np.testing.assert_array_equal(again, x)


@pytest.mark.parametrize(
    "make, batch_shape",
    [
        (backbones.mnist1d_conv1d, (2, 40, 1)),
        (backbones.digits_cnn, (2, 8, 8, 1)),
        (backbones.fashion_convnet, (2, 28, 28, 1)),
        (backbones.cifar10_cnn, (2, 32, 32, 3)),
        (lambda: backbones.small_cnn((8, 8, 3)), (2, 8, 8, 3)),
        (lambda: backbones.small_resnet((8, 8, 3), blocks=2), (2, 8, 8, 3)),
    ],
    ids=["mnist1d", "digits", "fashion", "cifar10", "small_cnn", "resnet"],
)
def test_backbones_classify_ten_classes(make, batch_shape):
    model = make()
    probabilities = np.asarray(model.predict(np.zeros(batch_shape, "float32"), verbose=0))
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
