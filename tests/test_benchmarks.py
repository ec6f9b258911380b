"""Smoke test of benchmarks/throughput.py, so the benchmark cannot rot.

Runs the script with tiny sizes on the current backend and checks that the
limit network it times is exactly the wrapped model without its aggregation.
Speed itself is never asserted here: see docs/BENCHMARKS.md.
"""

import json

import keras
import numpy as np
import pytest
from script_loader import load_script

import keras_agrlearn


@pytest.fixture(scope="module")
def throughput():
    return load_script("benchmarks/throughput.py", "throughput")


def test_script_runs_with_tiny_sizes(throughput, tmp_path):
    out = tmp_path / "results.json"
    throughput.main(
        [
            "--backbones=cnn",
            "--ns=2",
            "--image-shape=6,6,1",
            "--samples=8",
            "--batch=4",
            "--predict-batch=8",
            "--repeats=1",
            "--warmup=0",
            "--memory-batch=8",
            f"--out={out}",
        ]
    )
    report = json.loads(out.read_text())
    assert report["backend"] == keras.backend.backend()
    measured = {(r["backbone"], r["variant"], r["n"], r["phase"]) for r in report["results"]}
    expected = {("cnn", "plain", 1, "fit"), ("cnn", "plain", 1, "predict")}
    expected |= {("cnn", v, 2, "fit") for v in ("replicate", "limit")}
    expected |= {
        ("cnn", v, 2, "predict") for v in ("replicate", "group", "limit-replicate", "limit-group")
    }
    assert measured == expected
    assert all(r["samples_per_s"] > 0 for r in report["results"])
    assert {(m["inference"], m["n"]) for m in report["memory"]} == {
        ("group", 2),
        ("replicate", 2),
    }


@pytest.mark.parametrize("inference", ["group", "replicate"])
def test_limit_is_the_wrapped_model_without_aggregation(throughput, inference, rng):
    n = 3
    x = rng.random((6, 4, 4, 2), dtype=np.float32)
    wrapped = keras_agrlearn.wrap(
        throughput.small_cnn(x.shape[1:]),
        n,
        inference=inference,
        repetition=0.0,
        batch_repetition=1,
    )
    limit = throughput.inner_network(wrapped)
    aggregated = throughput.aggregate_numpy(x, n, replicate=inference == "replicate")
    np.testing.assert_allclose(
        aggregated,
        keras.ops.convert_to_numpy(
            keras_agrlearn.Aggregate(n, inference=inference, repetition=0.0, batch_repetition=1)(x)
        ),
    )
    slots = keras.ops.convert_to_numpy(limit(aggregated)).reshape(-1, n, throughput.CLASSES)
    np.testing.assert_allclose(slots.sum(axis=-1), 1.0, atol=1e-5)
    if inference == "replicate":
        # The wrapped model averages the slots' scores before the softmax.
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(np.log(slots).mean(axis=1)))
    else:
        probabilities = slots.reshape(len(x), -1)
    np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(wrapped(x)), atol=1e-5)


def test_overhead_profile_runs_with_tiny_sizes(throughput, tmp_path):
    module = load_script("benchmarks/profile_overheads.py", "profile_overheads")
    out = tmp_path / "profile.json"
    report = module.main(
        [
            "--n=2",
            "--backbone=cnn",
            "--samples=8",
            "--batch=8",
            "--calls=2",
            "--repeats=1",
            f"--out={out}",
        ]
    )
    assert json.loads(out.read_text())["backend"] == keras.backend.backend()
    assert [row["model"] for row in report["feeding"]] == ["plain", "group n=2"]
    assert all(row["direct_ms_per_sample"] > 0 for row in report["feeding"])
    shares = report["aggregation_share"]
    assert [row["backbone"] for row in shares] == ["cnn", "resnet"]
    assert all(0 < row["share"] and row["fit_step_ms"] > 0 for row in shares)
    if keras.backend.backend() == "torch":
        calls = {row["model"]: row["aten_calls"] for row in report["operators"]}
        assert calls["wrapped"] > calls["limit"] > 0


def test_batch_repetition_script_runs_with_tiny_sizes(tmp_path, capsys):
    script = load_script("benchmarks/batch_repetition.py", "batch_repetition")
    out = tmp_path / "results.json"
    script.main(
        [
            "--backbones=cnn",
            "--bs=1,2",
            "--image-shape=6,6,1",
            "--samples=12",
            "--batch=6",
            "--repeats=1",
            "--memory-batch=12",
            f"--out={out}",
        ]
    )
    report = json.loads(out.read_text())
    steps = {(row["objective"], row["batch_repetition"]): row for row in report["steps"]}
    assert set(steps) == {("mean", 1), ("mean", 2), ("slots", 1), ("slots", 2)}
    assert steps["mean", 1]["cpu_ratio"] == 1.0 and steps["mean", 2]["cpu_over_same_work"] > 0
    assert steps["mean", 1]["plain_cpu_ratio"] == 1.0 and steps["mean", 2]["plain_cpu_ratio"] > 0
    assert [row["batch_repetition"] for row in report["memory"]] == [1, 2]
    assert report["memory"][1]["aggregated_mib"] == 2 * report["memory"][0]["aggregated_mib"]
    script.main([f"--tables={tmp_path}"])
    assert "| cnn | slots | 2 |" in capsys.readouterr().out


def test_device_input_records_resume_and_tables(throughput, tmp_path):
    records = tmp_path / "runs.jsonl"
    argv = [
        "--backbones=cnn",
        "--ns=3",
        "--image-shape=6,6,1",
        "--samples=12",
        "--batch=6",
        "--predict-batch=12",
        "--repeats=1",
        "--warmup=0",
        "--no-memory",
        "--device-input",
        "--dtype-policy=mixed_bfloat16",
        f"--records={records}",
    ]
    report = throughput.main(argv)
    assert report["args"]["device_input"] and report["date"]
    assert {r["variant"] for r in report["results"] if r["phase"] == "predict"} == {
        "plain",
        "replicate",
        "group",
        "limit-replicate",
        "limit-group",
    }
    # A cell already recorded is skipped, so a rerun continues where records stop.
    assert throughput.main(argv) is None
    (line,) = records.read_text().splitlines()
    assert json.loads(line)["key"].startswith(f"{keras.backend.backend()}|")
    tables = throughput.main([f"--tables={records}"])
    assert f"| {keras.backend.backend()} | mixed_bfloat16 | on device | cnn |" in tables
    assert "input on device" in tables and report["date"] in tables
