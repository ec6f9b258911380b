"""Data-parallel training across two processes on 127.0.0.1 matches one process.

Each backend's pytest run checks its own engine, every process on one CPU
device: under JAX, two processes joined by `keras.distribution.initialize`
train under `keras.distribution.DataParallel`; under TensorFlow, two workers
of `tf.distribute.MultiWorkerMirroredStrategy` named in `TF_CONFIG`; under
PyTorch, which Keras does not distribute itself, two processes of a
`torch.distributed` group train inside `DistributedDataParallel`. A third
process trains the same model on one device with the same global batches.
`tests/multiprocess_helper.py` does the training.

Tolerance: with a global batch that is a multiple of n * devices, the
per-epoch losses and the final weights of both workers agree with the
one-process run to within `TOLERANCE` (measured: at most 7.5e-8 on JAX,
6.0e-8 on TensorFlow, 4.5e-8 on PyTorch: float32 sums in another order).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "multiprocess_helper.py"
BACKEND = keras.backend.backend()
TOLERANCE = 1e-5
# Seconds for all three processes together, then every one is killed.
TIMEOUT = 300


def _free_ports(count):
    """Ports on 127.0.0.1 that nothing listens on, all distinct."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _environment():
    env = {
        key: value
        for key, value in os.environ.items()
        # Loopback needs no proxy, and a proxy would catch gRPC's traffic.
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
        and key not in ("XLA_FLAGS", "TF_CONFIG", "JAX_COORDINATOR_ADDRESS")
        and not key.startswith("KERAS_DISTRIBUTION_")
    }
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            # Each process leads a session of its own: kill what it started too.
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _run(logs):
    """Starts the one-process run and both workers; returns their outcomes."""
    addresses = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    commands = {
        "single": [BACKEND, "single"],
        "worker0": [BACKEND, "worker", "0", addresses],
        "worker1": [BACKEND, "worker", "1", addresses],
    }
    processes = {}
    try:
        for name, args in commands.items():
            with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
                processes[name] = subprocess.Popen(
                    [sys.executable, str(HELPER), *args],
                    cwd=ROOT,
                    env=_environment(),
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        deadline = time.monotonic() + TIMEOUT
        # A worker that fails leaves the other waiting on it: stop at once.
        while any(p.poll() is None for p in processes.values()):
            if time.monotonic() > deadline or any(p.poll() for p in processes.values()):
                break
            time.sleep(0.2)
        timed_out = time.monotonic() > deadline
    finally:
        _stop(processes.values())
    # A process that failed on its own first, then those stopped for it.
    ordered = sorted(processes.items(), key=lambda item: item[1].returncode < 0)
    failures = [
        f"{name} exited with {process.returncode}"
        f"{' (killed after %d s)' % TIMEOUT if timed_out else ''}:\n"
        + (logs / f"{name}.err").read_text()[-2000:]
        for name, process in ordered
        if process.returncode != 0
    ]
    assert not failures, "\n".join(failures)
    return {
        name: json.loads((logs / f"{name}.out").read_text().strip().splitlines()[-1])
        for name in processes
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("multiprocess"))


def _largest_difference(a, b):
    return max(float(np.max(np.abs(np.subtract(u, v)))) for u, v in zip(a, b))


@pytest.mark.parametrize("worker", ["worker0", "worker1"])
def test_losses_and_weights_match_one_process(outcomes, worker):
    single, distributed = outcomes["single"], outcomes[worker]
    assert len(distributed["losses"]) == len(single["losses"]) == 3
    assert single["losses"][-1] < single["losses"][0]
    assert _largest_difference([distributed["losses"]], [single["losses"]]) <= TOLERANCE
    assert _largest_difference(distributed["weights"], single["weights"]) <= TOLERANCE


def test_workers_hold_the_same_weights(outcomes):
    assert outcomes["worker0"]["weights"] == outcomes["worker1"]["weights"]


@pytest.mark.skipif(
    BACKEND == "torch", reason="Aggregate cannot see how DistributedDataParallel splits a batch"
)
@pytest.mark.parametrize("worker", ["worker0", "worker1"])
def test_warns_when_the_global_batch_splits_groups(outcomes, worker):
    rule = {"jax": "n * devices = 4", "tensorflow": "n * replicas = 4"}[BACKEND]
    warnings = outcomes[worker]["broken_warnings"]
    assert warnings and all(rule in message for message in warnings), warnings


def test_no_false_alarm(outcomes):
    # Whole groups on every device, and one device takes any batch.
    assert outcomes["worker0"]["kept_warnings"] == []
    assert outcomes["worker1"]["kept_warnings"] == []
    assert outcomes["single"]["kept_warnings"] == []
    assert outcomes["single"]["broken_warnings"] == []


def test_split_groups_change_training_except_under_jax(outcomes):
    # JAX compiles one program for the global batch, so a group that spans
    # devices costs communication but computes what one device computes.
    # Each tf.distribute replica and each DistributedDataParallel process
    # groups its own share instead: its 15 samples are completed cyclically,
    # so training differs from one device.
    single = outcomes["single"]["broken_losses"]
    difference = _largest_difference([outcomes["worker0"]["broken_losses"]], [single])
    if BACKEND == "jax":
        assert difference <= TOLERANCE
    else:
        assert difference > 1e3 * TOLERANCE


@pytest.mark.skipif(
    BACKEND != "jax", reason="each replica or process draws a plan for its own share"
)
@pytest.mark.parametrize("worker", ["worker0", "worker1"])
def test_input_repetition_matches_one_process_under_jax(outcomes, worker):
    # The repetition plan is drawn for the global batch with the same seed
    # state, and JAX's random bits do not depend on the sharding.
    single = outcomes["single"]["repetition_weights"]
    assert _largest_difference(outcomes[worker]["repetition_weights"], single) <= TOLERANCE


def test_feature_mixing_trains_in_step_on_every_worker(outcomes):
    # Gradients are all-reduced, so the workers stay in step whatever each
    # one draws for its share.
    for name in ("single", "worker0", "worker1"):
        assert np.isfinite(outcomes[name]["mixing_losses"]).all()
    assert outcomes["worker0"]["mixing_weights"] == outcomes["worker1"]["mixing_weights"]


@pytest.mark.skipif(
    BACKEND != "jax", reason="each replica or process draws the mixing for its own share"
)
@pytest.mark.parametrize("worker", ["worker0", "worker1"])
def test_feature_mixing_matches_one_process_under_jax(outcomes, worker):
    # The ratios and masks are drawn for the global batch's groups.
    single = outcomes["single"]["mixing_weights"]
    assert _largest_difference(outcomes[worker]["mixing_weights"], single) <= TOLERANCE


if __name__ == "__main__":
    # `KERAS_BACKEND=jax python tests/test_data_parallel_multiprocess.py`
    # prints the largest differences from the one-process run.
    import tempfile

    with tempfile.TemporaryDirectory() as logs:
        found = _run(pathlib.Path(logs))
    single = found["single"]
    report = {
        worker: {
            "loss": _largest_difference([found[worker]["losses"]], [single["losses"]]),
            "weight": _largest_difference(found[worker]["weights"], single["weights"]),
            "split_groups_loss": _largest_difference(
                [found[worker]["broken_losses"]], [single["broken_losses"]]
            ),
        }
        for worker in ("worker0", "worker1")
    }
    if BACKEND == "jax":
        for worker in report:
            report[worker]["repetition_weight"] = _largest_difference(
                found[worker]["repetition_weights"], single["repetition_weights"]
            )
    print(json.dumps({"backend": BACKEND, "largest_difference": report}, indent=1))
