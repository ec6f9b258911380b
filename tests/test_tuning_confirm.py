"""`keras_agrlearn.tuning.confirm` and `tuning/search.py --confirm-seeds`."""

import json
import re

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from script_loader import load_script  # noqa: E402

from keras_agrlearn import paired_comparison  # noqa: E402
from keras_agrlearn.tuning import AgrLearnHyperModel  # noqa: E402
from keras_agrlearn.tuning import confirm  # noqa: E402
from keras_agrlearn.tuning import leaderboard  # noqa: E402

search = load_script("tuning/search.py", "agrlearn_tuning_search_confirm")

VERDICTS = ("aggregation helps", "no difference shown", "plain is better")


def _backbone():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _data(rng, count):
    x = rng.normal(size=(count, 4)).astype("float32")
    return x, np.argmax(x[:, :3], axis=1)


@pytest.fixture
def searched(rng, tmp_path):
    """A finished grid search over n=1 and n=2, and its data."""
    hypermodel = AgrLearnHyperModel(
        _backbone, n=(1, 2), width=1.0, learning_rate=1e-2, weight_decay=1e-3
    )
    tuner = keras_tuner.GridSearch(
        hypermodel, objective="val_accuracy", directory=str(tmp_path), project_name="grid"
    )
    train, validation, holdout = _data(rng, 48), _data(rng, 24), _data(rng, 30)
    tuner.search(*train, validation_data=validation, epochs=2, batch_size=12, verbose=0)
    return tuner, train, validation, holdout


def _confirm(searched, **kwargs):
    tuner, train, validation, holdout = searched
    arguments = dict(
        validation_data=validation, holdout_data=holdout, seeds=3, epochs=2, batch_size=12
    )
    return confirm(tuner, *train, **{**arguments, **kwargs})


def test_confirm_compares_the_best_plain_and_aggregated_trials_and_resumes(searched, monkeypatch):
    tuner = searched[0]
    fit = AgrLearnHyperModel.fit
    calls = []

    def stopped_in_the_third_fit(self, hp, *args, **kwargs):
        calls.append(hp.get("n"))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fit(self, hp, *args, **kwargs)

    monkeypatch.setattr(AgrLearnHyperModel, "fit", stopped_in_the_third_fit)
    with pytest.raises(KeyboardInterrupt):
        _confirm(searched)
    records = tuner.project_dir + "/confirm.jsonl"
    assert len(open(records).read().splitlines()) == 2
    # Resumed: only the four fits not yet recorded run.
    result = _confirm(searched)
    assert calls == [1, 2, 1, 1, 2, 1, 2]
    lines = [json.loads(line) for line in open(records).read().splitlines()]
    assert [(r["role"], r["seed"]) for r in lines] == [
        (role, seed) for seed in range(3) for role in ("plain", "aggregated")
    ]
    assert result["plain"]["hyperparameters"]["n"] == 1
    assert result["aggregated"]["hyperparameters"]["n"] == 2
    rows = {row["trial"]: row for row in leaderboard(tuner)}
    for role in ("plain", "aggregated"):
        config = result[role]
        # Retrained under the search's cap: the trial's epochs and FLOPs.
        row = rows[config["trial"]]
        assert config["epochs"] == row["epochs"]
        assert config["training_flops"] == pytest.approx(row["training_flops"])
        assert config["inference_flops"] == pytest.approx(row["inference_flops"])
        assert len(config["accuracy"]) == len(config["tempered_nll"]) == 3
        assert all(t > 0 for t in config["temperature"])
    assert result["plain"]["relative_training_flops"] == pytest.approx(2.0)
    expected = paired_comparison(
        {"accuracy": result["plain"]["accuracy"], "nll": result["plain"]["tempered_nll"]},
        {
            "accuracy": result["aggregated"]["accuracy"],
            "nll": result["aggregated"]["tempered_nll"],
        },
    )
    assert result["comparison"] == expected
    assert result["verdict"] == expected["verdict"] in VERDICTS
    report = open(tuner.project_dir + "/verdict.md").read()
    assert report == result["report"]
    assert f"Verdict: {result['verdict']}." in report
    assert "| accuracy |" in report and "| tempered NLL |" in report
    assert "training FLOPs x plain" in report and "inference MFLOPs" in report
    # A finished confirmation only reports again.
    calls.clear()
    assert _confirm(searched)["comparison"] == expected
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"seeds": 1},
            ValueError,
            r"Argument `seeds` \(paired seeds; .*\) must be an integer >= 2",
        ),
        ({"seeds": 0}, ValueError, r"got seeds=0"),
        ({"seeds": 2.0}, TypeError, r"`seeds` .* got 2.0 of type float"),
        ({"epochs": 0}, ValueError, r"Argument `epochs` .* >= 1"),
    ],
    ids=["one_seed", "zero", "float", "epochs"],
)
def test_confirm_argument_errors(kwargs, error, match, searched):
    with pytest.raises(error, match=match):
        _confirm(searched, **kwargs)


def test_confirm_needs_a_completed_trial_of_each_kind(rng, tmp_path):
    hypermodel = AgrLearnHyperModel(_backbone, n=1, width=1.0, learning_rate=1e-2)
    tuner = keras_tuner.GridSearch(hypermodel, objective="val_accuracy", directory=str(tmp_path))
    train, validation = _data(rng, 24), _data(rng, 12)
    tuner.search(*train, validation_data=validation, epochs=1, batch_size=12, verbose=0)
    with pytest.raises(ValueError, match=r"no completed trial with n > 1"):
        confirm(
            tuner, *train, validation_data=validation, holdout_data=validation, seeds=2, epochs=1
        )


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--confirm-seeds", "1"], r"--confirm-seeds must be at least 2 .* got 1"),
        (["--confirm-seeds", "3", "--n", "2", "3"], r"--n must list 1 and a larger n"),
        (["--learning-rate", "1e-4", "1e-3", "1e-2"], r"--learning-rate takes one value"),
        (["--weight-decay", "1", "2", "3"], r"--weight-decay takes one value"),
    ],
    ids=["one_seed", "no_plain", "learning_rate", "weight_decay"],
)
def test_search_script_argument_errors(argv, match, capsys):
    with pytest.raises(SystemExit):
        search.parse_args(argv)
    assert len(re.findall(match, capsys.readouterr().err)) == 1


def test_search_script_confirms_after_the_search(tmp_path, capsys):
    argv = ["--dataset", "digits", "--samples", "96", "--epochs", "1", "--batch-size", "32"]
    argv += ["--n", "1", "2", "--width", "1", "--learning-rate", "3e-3"]
    argv += ["--weight-decay", "1e-3", "--trials", "2", "--verbose", "0"]
    argv += ["--confirm-seeds", "2", "--output", str(tmp_path)]
    assert search.main(argv) == 0
    out = capsys.readouterr().out
    verdict = (tmp_path / "digits_random" / "verdict.md").read_text()
    assert verdict in out
    assert "Confirming with 2 paired seeds" in out
    assert "Confirmation over 2 paired seeds, scored on 360 held-out samples" in verdict
    assert any(f"Verdict: {v}." in verdict for v in VERDICTS)
