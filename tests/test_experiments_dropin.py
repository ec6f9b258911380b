"""The drop-in study on the study engine: its queue, keys, page name and a smoke run."""

import json

import keras
import pytest

from experiments import dropin
from experiments import study


def test_keys_are_those_of_the_records():
    options = dropin.parse(["--phases", "defaults", "--fashion-train", "10000"])
    keys = [dropin.STUDY.key_of(job) for job in dropin.queue(options, {})]
    assert keys[0] == "mnist1d-32|plain|0|10000|20"
    records = study.load_records(study.ROOT / "docs" / "results" / "dropin-defaults.jsonl")
    assert sorted(keys) == sorted(records)


def test_a_run_shared_by_two_phases_is_queued_once():
    options = dropin.parse(["--phases", "select,defaults"])
    keys = [dropin.STUDY.key_of(job) for job in dropin.queue(options, {})]
    assert len(keys) == len(set(keys))
    assert "mnist1d-32|plain|0|20000|20" in keys and "fashion-resnet|plain|2|20000|5" in keys


@pytest.mark.parametrize(
    "records, page",
    [
        ("docs/results/dropin.jsonl", "docs/DROPIN.md"),
        ("r/x/dropin-defaults.jsonl", "r/DROPIN_DEFAULTS.md"),
    ],
)
def test_the_page_is_named_after_the_records(records, page):
    assert dropin.parse(["--records", records]).report == page


def test_unknown_phase_is_refused():
    with pytest.raises(SystemExit):
        dropin.parse(["--phases", "select,nope"])


def test_quick_run_records_and_writes_its_page(tmp_path):
    if keras.backend.backend() != "jax":
        pytest.skip("the study runs on JAX (its page names the backend); one smoke run suffices")
    records = tmp_path / "results" / "dropin-slots.jsonl"
    dropin.main(["--quick", "--phases", "fashion-slots", "--records", str(records)])
    (record,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert record["key"] == "fashion-convnet|b3-r0.5-slots-w1.73|0|20000|1"
    assert record["settings"]["objective"] == "slots" and record["train_samples"] == 256
    assert record["backend"] == "jax" and record["command"].startswith("python experiments/dropin")
    page = (tmp_path / "DROPIN_SLOTS.md").read_text()
    assert f"--records {records}" in page and "## Fashion-MNIST" in page
