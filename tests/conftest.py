"""Shared fixtures. The backend is fixed per pytest process by KERAS_BACKEND."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# Compilation modes worth testing per backend: JAX always traces under jit;
# Keras turns XLA off for TensorFlow on CPU unless asked, so both paths are
# tested there; torch.compile costs about a minute per model, so PyTorch
# runs eagerly.
JIT_MODES = {"jax": [True], "tensorflow": [False, True], "torch": [False]}[BACKEND]


@pytest.fixture(params=JIT_MODES, ids=lambda j: f"jit={j}")
def jit_compile(request):
    return request.param


@pytest.fixture(autouse=True)
def _fresh_session(request):
    """A fresh Keras session and global seed per test.

    Tests marked `keep_session` skip it: they train nothing, so no state or
    random draw matters, and the reset would cost more than they do.
    """
    if request.node.get_closest_marker("keep_session") is None:
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    # keras.applications graphs take minutes per backend on a 2-core CPU;
    # AGRLEARN_SLOW_TESTS=1 runs them.
    if os.environ.get("AGRLEARN_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set AGRLEARN_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
