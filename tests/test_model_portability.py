"""Saved models are portable: saved under each backend, loaded under the others.

The exchange runs in this process and in one subprocess for each of the other
two backends, so it runs under the PyTorch pytest process only (three backends
would triple it): PyTorch saves first; TensorFlow and JAX then run side by
side, each saving its files and loading the other two backends'; PyTorch
finally loads theirs. Every backend's files are thus loaded by both others:
`.keras` files with `safe_mode=True` and weights-only checkpoints into a
freshly wrapped model.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import portable_model_helper
import pytest

TOLERANCE = 1e-5
HELPER = pathlib.Path(portable_model_helper.__file__)


def start_helper(backend, directory, wait):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, str(HELPER), str(directory), *wait],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HELPER.parent.parent,
    )


def result_of(process):
    stdout, stderr = process.communicate(timeout=portable_model_helper.WAIT_SECONDS + 100)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="runs once, from the PyTorch pytest process, with subprocesses for the others",
)
def test_saved_models_load_and_predict_the_same_under_every_backend(tmp_path):
    portable_model_helper.exchange(tmp_path)
    others = {"tensorflow": "jax", "jax": "tensorflow"}
    processes = {b: start_helper(b, tmp_path, [other]) for b, other in others.items()}
    checked = {backend: result_of(process) for backend, process in processes.items()}
    checked["torch"] = portable_model_helper.check_others(tmp_path)

    backends = portable_model_helper.BACKENDS
    pairs = {
        (saved.rsplit("_", 1)[0], loader)
        for loader, results in checked.items()
        for saved in results
    }
    assert pairs == {(a, b) for a in backends for b in backends if a != b}
    for loader, results in checked.items():
        for saved, diffs in results.items():
            for kind, diff in diffs.items():
                assert diff <= TOLERANCE, (saved, "loaded by", loader, kind, diff)
