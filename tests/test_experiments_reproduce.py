"""Smoke test of the reproduction runner at tiny sizes; full runs are not CI."""

import json

import pytest

from experiments import report
from experiments import reproduce


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    records = tmp_path_factory.mktemp("records")
    out = tmp_path_factory.mktemp("docs")
    argv = ["--quick", "--records", str(records), "--out", str(out)]
    reproduce.main(argv)
    return records, out, argv


def test_every_phase_writes_records_and_report(quick_run):
    records, out, _ = quick_run
    runs = reproduce.load_records(records)
    phases = {r["phase"] for r in runs}
    assert phases == {"grid", "repetition", "data", "digits"}
    for run in runs:
        # Checkpoints in order, through the equal-epochs and equal-compute points.
        epochs = [point["epoch"] for point in run["checkpoints"]]
        assert epochs == sorted(set(epochs)) and run["epochs"] in epochs
        assert epochs[-1] >= run["epochs"] * run["n"]
        for point in run["checkpoints"]:
            for split in ("val", "test"):
                assert 0.0 <= point[split]["acc"] <= 1.0
                assert point[split]["nll"] > 0.0
                assert 0.0 <= point[split]["ece"] <= 1.0
        if run["n"] > 1 and run["phase"] != "data":
            assert set(run["protocols"]) == set(reproduce.PROTOCOLS)
    text = (out / "EARLIER_STUDIES.md").read_text()
    for heading in (
        "n x width",
        "Training length",
        "test protocols",
        "input repetition",
        "Data efficiency",
        "digits",
    ):
        assert heading in text
    for plot in ("grid.png", "training_length.png", "data_efficiency.png"):
        assert (out / plot).stat().st_size > 0
    lines = (out / "results" / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(runs)
    json.loads(lines[0])


def test_rerun_trains_nothing_and_rebuilds_the_report(quick_run, monkeypatch):
    records, out, argv = quick_run
    (out / "EARLIER_STUDIES.md").unlink()
    monkeypatch.setattr(reproduce, "train", pytest.fail)
    reproduce.main(argv)
    assert (out / "EARLIER_STUDIES.md").exists()


def test_equal_compute_schedule():
    options = reproduce.parse(["--ns", "1,2,4", "--epochs", "20"])
    plain = reproduce.spec_of(options, "mnist1d", 1, 1.0, 0, epochs=20, phase="grid")
    folded = reproduce.spec_of(options, "mnist1d", 2, 3.0, 0, epochs=20, phase="grid")
    assert plain["checkpoints"][-1] == 80 and 20 in plain["checkpoints"]
    assert folded["checkpoints"] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert plain["key"] != folded["key"]


@pytest.mark.parametrize(
    "values, expected",
    [([0.5], "50.0"), ([0.5, 0.7], "60.0 ± 14.1"), ([], "-")],
)
def test_mean_std(values, expected):
    assert report.mean_std(values) == expected


def test_unknown_phase_is_rejected():
    with pytest.raises(SystemExit):
        reproduce.parse(["--phases", "grid,nope"])
