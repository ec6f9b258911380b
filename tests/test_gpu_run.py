"""scripts/gpu_run.sh in its quick mode, and the study's queue order it relies on.

The quick mode runs the whole entry point (package check, machine record,
the compute-fair queue, one speed cell, the reports) on tiny random data on
the CPU, so the script is known to work before any GPU time is spent.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

from experiments import fair
from experiments import fair_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRIORITY = ["plain", "wrap-n2", "wrap-mimo"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the script starts its own processes on JAX and PyTorch; one run suffices",
)
def test_quick_run_records_and_continues_where_records_stop(tmp_path):
    out = tmp_path / "gpu"
    command = ["bash", str(ROOT / "scripts" / "gpu_run.sh"), "--quick", "--out", str(out)]
    env = dict(os.environ, PYTHON=sys.executable)
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    study = lines(out / "fair-gpu.jsonl")
    assert [r["arm"] for r in study[:4]] == ["plain"] + PRIORITY
    assert [r["phase"] for r in study[:4]] == ["budget", "arms", "arms", "arms"]
    rest = [r for r in study[4:] if r["phase"] == "arms"]
    expected = {*fair_configs.CONFIRMATION_ARMS, "wrap-n2-long2"} - set(PRIORITY)
    assert {r["arm"] for r in rest} == expected
    data = {r["arm"] for r in study if r["phase"] == "data"}
    assert data == set(fair.CONFIGS["fashion-convnet"]["data_arms"])
    (speed,) = lines(out / "throughput-gpu.jsonl")
    assert speed["backend"] == "torch" and speed["args"]["device_input"]
    assert speed["args"]["dtype_policy"] == "mixed_bfloat16"
    (machine,) = lines(out / "environment.jsonl")
    assert machine["quick"] and machine["keras"] == keras.__version__
    assert "on device" in (out / "THROUGHPUT_GPU.md").read_text()
    assert "fashion-convnet" in (out / "FAIR_GPU.md").read_text()

    records = {
        name: (out / name).read_text() for name in ("fair-gpu.jsonl", "throughput-gpu.jsonl")
    }
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {name: (out / name).read_text() for name in records} == records
    assert len(lines(out / "environment.jsonl")) == 2


def queue(*extra):
    options = fair.parse(["--quick", "--configs", "fashion-convnet,fashion-resnet20", *extra])
    return [(j["config"], j["phase"], j["arm"], j["seed"]) for j in fair.queue(options, {})]


def test_priority_arms_come_right_after_their_configuration_budget_runs():
    default, prioritised = queue(), queue("--priority-arms", ",".join(PRIORITY))
    assert sorted(default) == sorted(prioritised)
    budget = [job for job in default if job[1] == "budget"]
    assert default[: len(budget)] == budget
    convnet_first = [("fashion-convnet", "arms", arm, 0) for arm in PRIORITY]
    assert prioritised[:4] == [budget[0], *convnet_first]
    assert prioritised[4:8] == [
        budget[1],
        *[("fashion-resnet20",) + job[1:] for job in convnet_first],
    ]


def test_priority_arms_must_be_arms():
    with pytest.raises(SystemExit):
        fair.parse(["--priority-arms", "plain,wide"])
