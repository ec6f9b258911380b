"""Data-parallel training over two CPU devices matches one device.

Each backend's check runs in a subprocess, which sets up two virtual CPU
devices before the backend starts, and only from that backend's pytest
process: JAX's `keras.distribution.DataParallel` from the JAX run,
TensorFlow's `MirroredStrategy` from the TensorFlow run. With a per-device
batch that is a multiple of n, every group lies on one device and holds the
same samples as on one device, so accuracy and weights match.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

HELPER = pathlib.Path(__file__).with_name("data_parallel_helper.py")
BACKEND = keras.backend.backend()

pytestmark = pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"),
    reason="data-parallel training is checked for JAX and TensorFlow",
)


@pytest.fixture(scope="module")
def outcome():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, str(HELPER), BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        cwd=HELPER.parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_devices_train_like_one(outcome):
    assert outcome["single_accuracy"] > 0.8, outcome
    assert abs(outcome["parallel_accuracy"] - outcome["single_accuracy"]) <= 0.02, outcome
    assert outcome["max_weight_difference"] <= 1e-4, outcome


def test_batch_repetition_keeps_labels_aligned_on_two_devices(outcome):
    assert outcome["parallel_batch_repetition_accuracy"] > 0.8, outcome


def test_warns_when_per_device_batch_is_not_a_multiple_of_n(outcome):
    assert outcome["warned_on_broken_rule"], outcome
    assert "multiple of n * replicas = 4" in outcome["warning"] or (
        "multiple of n * devices = 4" in outcome["warning"]
    ), outcome


def test_no_false_alarm_when_the_rule_holds(outcome):
    # 256 samples in batches of 32: every batch is full, so the per-device
    # batch is known (JAX: the global batch) and checked exactly. Where it is
    # not known on TensorFlow (a partial last batch), the warning states the
    # rule instead.
    assert not outcome["warned_on_kept_rule"], outcome
