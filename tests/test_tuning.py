"""AgrLearnHyperModel, leaderboard() and the tuning/search.py job."""

import json

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from script_loader import load_script  # noqa: E402

from keras_agrlearn.tuning import AgrLearnHyperModel  # noqa: E402
from keras_agrlearn.tuning import leaderboard  # noqa: E402

search = load_script("tuning/search.py", "agrlearn_tuning_search")

# Few samples, few epochs (a width-2 trial fits one in the cap), two choices
# each: the search machinery is under test here, not the accuracy it finds.
TINY = ["--dataset", "digits", "--samples", "64", "--epochs", "2", "--batch-size", "32"]
TINY += ["--n", "1", "2", "--width", "1", "2", "--verbose", "0"]


def _backbone():
    return keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.Conv1D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _table(project_dir):
    lines = (project_dir / "leaderboard.md").read_text().strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.parametrize("n, width", [(1, 1.0), (2, 1.0), (3, 1.5)])
def test_build_fixed_values(n, width, rng):
    hypermodel = AgrLearnHyperModel(
        _backbone(), n=n, width=width, learning_rate=1e-3, weight_decay=0.01
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values == {"n": n, "width": width, "learning_rate": 1e-3, "weight_decay": 0.01}
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert float(model.optimizer.weight_decay) == pytest.approx(0.01)
    assert model.optimizer is not None and model.compiled
    x = rng.random((5, 6, 2)).astype("float32")
    assert tuple(model(x).shape) == (5, 3)
    if (n, width) == (1, 1.0):
        assert model.count_params() == _backbone().count_params()


def test_search_space_names_and_choices():
    hypermodel = AgrLearnHyperModel(
        _backbone, n=(1, 2, 4), width=(1.0, 2.0), learning_rate=(1e-4, 1e-2)
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert list(space["n"].values) == [1, 2, 4]
    assert list(space["width"].values) == [1.0, 2.0]
    rate = space["learning_rate"]
    assert (rate.min_value, rate.max_value, rate.sampling) == (1e-4, 1e-2, "log")


def test_learning_rate_and_weight_decay_are_searched_by_default():
    hypermodel = AgrLearnHyperModel(_backbone, n=(1, 2), width=1.0)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    for name, bounds in (("learning_rate", (3e-4, 3e-3)), ("weight_decay", (1e-4, 1e-1))):
        assert (space[name].min_value, space[name].max_value) == bounds
        assert space[name].sampling == "log"
    # n=1, the plain network, stays in the space.
    assert list(space["n"].values) == [1, 2]
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert float(model.optimizer.weight_decay) == pytest.approx(hp.get("weight_decay"))
    assert hypermodel.training_budget == 2.0 and hypermodel.cosine_decay


def test_weight_decay_none_keeps_the_optimizers_own():
    hypermodel = AgrLearnHyperModel(_backbone, n=2, width=1.0, weight_decay=None, optimizer="adam")
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert "weight_decay" not in hp.values
    assert model.optimizer.weight_decay is None


@pytest.mark.parametrize("optimizer", ["sgd", keras.optimizers.SGD(momentum=0.5)])
def test_optimizer_gets_trial_learning_rate(optimizer):
    hypermodel = AgrLearnHyperModel(_backbone(), n=2, width=1.0, optimizer=optimizer)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.05)
    model = hypermodel.build(hp)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    assert model.optimizer is not optimizer
    if not isinstance(optimizer, str):
        assert model.optimizer.momentum == 0.5


def test_metric_objects_are_fresh_per_trial():
    metric = keras.metrics.SparseCategoricalAccuracy(name="acc")
    hypermodel = AgrLearnHyperModel(_backbone(), n=2, width=1.0, metrics=[metric])
    first = hypermodel.build(keras_tuner.HyperParameters())
    second = hypermodel.build(keras_tuner.HyperParameters())
    x, y = np.zeros((4, 6, 2), "float32"), np.zeros((4,), "int32")
    first.evaluate(x, y, verbose=0)
    second.evaluate(x, y, verbose=0)
    # A metric shared between the models would have counted their samples.
    assert float(metric.count) == 0.0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"backbone": "resnet"}, TypeError),
        ({"n": (1, 0)}, ValueError),
        ({"n": (2, 2)}, ValueError),
        ({"n": ()}, ValueError),
        ({"width": (1.0, -1.0)}, ValueError),
        ({"learning_rate": 0.0}, ValueError),
        ({"learning_rate": (1e-2, 1e-4)}, ValueError),
        ({"learning_rate": (1e-4, 1e-3, 1e-2)}, ValueError),
        ({"weight_decay": (1e-2, 1e-4)}, ValueError),
        ({"weight_decay": -1.0}, ValueError),
        ({"training_budget": 0.0}, ValueError),
        ({"training_budget": float("nan")}, ValueError),
        ({"training_budget": "2"}, TypeError),
        ({"equal_compute": "yes"}, TypeError),
        ({"cosine_decay": 1}, TypeError),
        ({"optimizer": 3}, TypeError),
        ({"inference": "mean"}, ValueError),
        ({"dropout": 0.5}, TypeError),
    ],
)
def test_invalid_arguments(kwargs, error):
    kwargs = {"backbone": _backbone(), **kwargs}
    with pytest.raises(error):
        AgrLearnHyperModel(**kwargs)


def test_callable_backbone_must_return_a_model():
    hypermodel = AgrLearnHyperModel(lambda: "not a model", n=2, width=1.0)
    with pytest.raises(TypeError, match="must return a keras.Model"):
        hypermodel.build(keras_tuner.HyperParameters())


@pytest.mark.parametrize(
    "tuner, oracle",
    [
        ("random", "RandomSearchOracle"),
        ("bayesian", "BayesianOptimizationOracle"),
        ("hyperband", "HyperbandOracle"),
    ],
)
def test_tuner_choice(tuner, oracle, tmp_path):
    args = search.parse_args([*TINY, "--tuner", tuner, "--output", str(tmp_path)])
    hypermodel = AgrLearnHyperModel(_backbone(), n=args.n, width=args.width)
    built = search.make_tuner(args, hypermodel)
    assert type(built.oracle).__name__ == oracle
    assert built.project_dir == str(tmp_path / f"digits_{tuner}")


def test_local_search_resumes_after_interrupt(tmp_path, monkeypatch, capsys):
    # One search run twice, to keep the suite short: interrupted in its second
    # trial, then resumed from the same directory to the end and the report.
    argv = [*TINY, "--tuner", "random", "--trials", "2", "--output", str(tmp_path)]
    run_trial = keras_tuner.RandomSearch.run_trial
    started = []

    def interrupted_in_second_trial(self, trial, *args, **kwargs):
        started.append(trial.trial_id)
        if len(started) == 2:
            raise KeyboardInterrupt
        return run_trial(self, trial, *args, **kwargs)

    monkeypatch.setattr(keras_tuner.RandomSearch, "run_trial", interrupted_in_second_trial)
    with pytest.raises(KeyboardInterrupt):
        search.main(argv)
    project = tmp_path / "digits_random"
    first = json.loads((project / "trial_0" / "trial.json").read_text())
    assert first["status"] == "COMPLETED"
    assert not (project / "leaderboard.md").exists()

    assert search.main(argv) == 0
    # The finished trial is kept, the interrupted one runs again.
    assert started == ["0", "1", "1"]
    rows = {row[1]: row for row in _table(project)}
    assert sorted(rows) == ["0", "1"]
    assert all(row[-1] == "COMPLETED" for row in rows.values())
    assert {row[2] for row in rows.values()} <= {"1", "2"}
    assert float(rows["0"][9]) == pytest.approx(first["score"], abs=1e-4)
    # Every trial records its learning rate and weight decay, its epochs,
    # forward passes and training FLOPs per sample, its FLOPs relative to
    # the plain network's, its inference FLOPs and its fit time.
    header = (project / "leaderboard.md").read_text().splitlines()[0]
    assert "| weight decay | epochs |" in header and "training FLOPs x plain" in header
    for row in rows.values():
        assert float(row[6]) > 0 and float(row[7]) > 0 and int(row[8]) >= 1
        passes, training, relative, inference, seconds = row[10:15]
        assert float(passes) > 0 and float(training) > 0 and float(inference) > 0
        assert seconds != ""
        # Within the cap of 2 x the plain network's epochs; the plain
        # network itself fills it.
        assert 0 < float(relative) <= 2.0
        assert relative == "2.00" or (row[2], row[3]) != ("1", "1.0")
    assert (project / "score_by_n_width.png").stat().st_size > 0
    model = keras.saving.load_model(project / "best_model.keras")
    assert tuple(model.output.shape) == (None, 10)
    out = capsys.readouterr().out
    assert "Reloading Tuner" in out
    assert "Leaderboard (2 trials" in out and "Best: n=" in out


@pytest.mark.parametrize("objective, best_first", [("val_loss", 0.2), ("val_accuracy", 0.9)])
def test_leaderboard_orders_by_objective(objective, best_first, tmp_path):
    hypermodel = AgrLearnHyperModel(
        _backbone(), n=(1, 2, 3), width=1.0, learning_rate=1e-3, weight_decay=None
    )
    tuner = keras_tuner.GridSearch(
        hypermodel, objective=objective, directory=str(tmp_path), max_trials=3
    )
    oracle = tuner.oracle
    for score in (0.9, 0.2):
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {objective: score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    oracle.create_trial("tuner0")
    rows = leaderboard(tuner)
    assert [row["score"] for row in rows[:2]] == pytest.approx([best_first, 1.1 - best_first])
    assert rows[2]["score"] is None
    assert [row["n"] for row in rows][2] == 3
    assert rows[2]["status"] == "RUNNING"
    assert rows[0].keys() == {
        "trial",
        "n",
        "width",
        "batch_repetition",
        "repetition",
        "learning_rate",
        "weight_decay",
        "score",
        "epochs",
        "forward_passes",
        "training_flops",
        "relative_training_flops",
        "inference_flops",
        "fit_seconds",
        "status",
    }


def test_load_cifar10_offline():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        (x, y), (xv, yv), (xt, yt) = search.load_cifar10()
    assert x.shape == (18, 32, 32, 3) and xv.shape == (2, 32, 32, 3)
    assert xt.shape[1:] == (32, 32, 3) and y.dtype == np.int32
    model = search.backbone("cifar10")
    assert tuple(model(xt[:2]).shape) == (2, 10)


def test_repetitions_are_tuned_with_stable_names():
    hypermodel = AgrLearnHyperModel(
        _backbone, n=(1, 3), width=1.0, batch_repetition=(1, 3), repetition=(0.0, 0.5)
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert list(space["batch_repetition"].values) == [1, 3]
    assert list(space["repetition"].values) == [0.0, 0.5]


def _dense_backbone():
    # The hidden-to-hidden layer holds most of the FLOPs, as in real backbones.
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _fit_trial(rng, epochs=8, **kwargs):
    """Builds and fits one trial on 12 samples in one batch of 12."""
    kwargs = {"learning_rate": 1e-3, "weight_decay": None, **kwargs}
    hypermodel = AgrLearnHyperModel(_dense_backbone, **kwargs)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x, y = rng.random((12, 4)).astype("float32"), rng.integers(0, 3, 12)
    history = hypermodel.fit(hp, model, x, y, epochs=epochs, batch_size=12, verbose=0)
    return model, {name: values[-1] for name, values in history.history.items()}, history


# The plain network: 2 * (4 * 32 + 32 * 32 + 32 * 3) FLOPs per pass.
PLAIN_FLOPS = 2 * (4 * 32 + 32 * 32 + 32 * 3)


@pytest.mark.parametrize(
    "budget, width, hidden, expected_epochs",
    # A cap of budget x 8 plain epochs; a pass costs about width**2 as much,
    # so the most epochs that fit are about budget * 8 / width**2, rounded down.
    [
        (2.0, 1.0, 32, 16),
        (2.0, 1.5, 48, 7),
        (2.0, 2.0, 64, 4),
        (2.0, 3.0, 96, 2),
        (1.0, 1.0, 32, 8),
        (1.0, 1.5, 48, 3),
        (0.5, 1.0, 32, 4),
    ],
)
def test_equal_compute_gives_wider_trials_fewer_epochs(budget, width, hidden, expected_epochs, rng):
    model, last, history = _fit_trial(rng, n=1, width=width, training_budget=budget)
    forward = 2 * (4 * hidden + hidden * hidden + hidden * 3)
    assert len(history.history["loss"]) == expected_epochs
    assert expected_epochs == int(budget * 8 * PLAIN_FLOPS // forward)
    assert last["epochs"] == expected_epochs
    assert last["training_flops"] == 3 * forward * expected_epochs
    assert last["relative_training_flops"] == pytest.approx(
        forward * expected_epochs / (PLAIN_FLOPS * 8)
    )
    assert last["relative_training_flops"] <= budget
    assert last["inference_flops"] == forward
    assert last["forward_passes"] == expected_epochs
    assert last["fit_seconds"] > 0


@pytest.mark.parametrize(
    "n, batch_repetition, repetition, expected_epochs",
    # An n-fold pass at width 1 costs a little more than a plain one (its
    # input and head layers are n times wider): n=2 about 1.18 x, n=3 1.35 x.
    # Per sample, b * (r + (1 - r) / n) passes: b=2 doubles them. The cap
    # is 2 x 8 plain epochs.
    [(2, 1, 0.0, 27), (2, 2, 0.0, 13), (3, 1, 0.0, 35), (3, 3, 0.0, 11), (3, 3, 0.5, 5)],
)
def test_equal_compute_gives_batch_repetition_fewer_epochs(
    n, batch_repetition, repetition, expected_epochs, rng
):
    _, last, history = _fit_trial(
        rng, n=n, width=1.0, batch_repetition=batch_repetition, repetition=repetition
    )
    assert len(history.history["loss"]) == expected_epochs
    # Every trial trains the most epochs within twice the plain network's
    # 8 epochs' FLOPs: one more would not fit.
    per_epoch = last["relative_training_flops"] / expected_epochs
    assert last["relative_training_flops"] <= 2.0 < per_epoch * (expected_epochs + 1)


def test_group_inference_costs_a_pass_per_n_samples(rng):
    model, last, _ = _fit_trial(rng, n=2, width=1.0, inference="group")
    forward = 2 * (8 * 32 + 32 * 32 + 32 * 6)
    assert last["inference_flops"] == forward / 2


def test_cosine_decay_stretches_over_the_trials_epochs(rng):
    _, _, wide = _fit_trial(rng, epochs=2, n=1, width=1.0)
    _, _, plain = _fit_trial(rng, epochs=4, n=1, width=2.0, cosine_decay=True)
    for history in (wide, plain):
        epochs = len(history.history["loss"])
        expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * e / epochs)) for e in range(epochs)]
        np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-5)
    _, _, constant = _fit_trial(rng, epochs=2, n=1, width=1.0, cosine_decay=False)
    assert "learning_rate" not in constant.history


def test_a_cap_below_one_epoch_of_every_trial_is_a_clear_error(rng):
    # 0.25 x 1 plain epoch is less than one epoch of the cheapest trial, n=2
    # at width 1 (its input and head cost a little more, its passes half).
    match = (
        r"`training_budget`: a cap of 0.25 plain epochs \(`training_budget=0.25` times "
        r"`epochs=1`\) is smaller than one epoch of the cheapest trial of the search "
        r"space \(n=2, width=1.0: 0.885 plain epochs\)\. Raise `training_budget` to at "
        r"least 0.885 or `epochs` to at least 4\."
    )
    with pytest.raises(ValueError, match=match):
        _fit_trial(rng, epochs=1, n=(1, 2), width=(1.0, 2.0), training_budget=0.25)


def test_a_trial_over_the_cap_is_failed_while_others_fit(rng):
    hypermodel = AgrLearnHyperModel(
        _dense_backbone, n=1, width=(1.0, 3.0), training_budget=1.0, learning_rate=1e-3
    )
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width", 3.0)
    model = hypermodel.build(hp)
    x, y = rng.random((12, 4)).astype("float32"), rng.integers(0, 3, 12)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="more than its cap of 1"):
        hypermodel.fit(hp, model, x, y, epochs=1, batch_size=12, verbose=0)


def test_search_with_a_cap_below_one_epoch_stops(tmp_path):
    # A cap of 0.4 x 2 plain epochs, less than one epoch of the plain network.
    argv = [*TINY, "--trials", "2", "--budget", "0.4", "--output", str(tmp_path)]
    with pytest.raises(ValueError, match=r"cheapest trial .* `epochs` to at least 3"):
        search.main(argv)


def test_equal_compute_can_be_turned_off(rng):
    _, last, history = _fit_trial(rng, epochs=2, n=1, width=2.0, equal_compute=False)
    assert len(history.history["loss"]) == 2
    forward = 2 * (4 * 64 + 64 * 64 + 64 * 3)
    np.testing.assert_allclose(last["relative_training_flops"], forward / PLAIN_FLOPS)
    np.testing.assert_allclose(last["forward_passes"], 2.0)


def test_passes_from_a_dataset_follow_the_formula(rng):
    tf = pytest.importorskip("tensorflow")
    hypermodel = AgrLearnHyperModel(
        _dense_backbone, n=2, width=1.0, batch_repetition=2, repetition=0.5
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x, y = rng.random((12, 4)).astype("float32"), rng.integers(0, 3, 12)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
    history = hypermodel.fit(hp, model, dataset, epochs=4, shuffle=False, verbose=0)
    trained = len(history.history["loss"])
    # b * (r + (1 - r) / n) = 1.5 passes per sample and epoch.
    assert history.history["forward_passes"][-1] == pytest.approx(1.5 * trained)


def test_arguments_after_n_are_keyword_only():
    with pytest.raises(TypeError):
        AgrLearnHyperModel(_backbone, (1, 2), (1.0, 2.0))


def test_forwarded_options_follow_wraps_signature():
    import inspect

    from keras_agrlearn import wrap
    from keras_agrlearn.tuning import _hypermodel as module

    assert "objective" in module._WRAP_OPTIONS and "batch_repetition" not in module._WRAP_OPTIONS
    assert set(module._WRAP_OPTIONS) | set(module._TUNED) == set(inspect.signature(wrap).parameters)
    with pytest.raises(TypeError, match=r"Unknown keyword arguments \['widht'\]"):
        AgrLearnHyperModel(_backbone, widht=2)
