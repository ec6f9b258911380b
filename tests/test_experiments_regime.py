"""The regime study: its choice rule, costs and augmentation, a smoke run, and its page."""

import argparse
from pathlib import Path

import keras
import numpy as np
import pytest

from experiments import regime
from experiments import study

ROOT = Path(__file__).resolve().parents[1]

jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the study's MNIST-1D part runs on JAX (its records name the backend); once suffices",
)


def _run(method, acc, nll, train_x=1.0, infer_x=1.0, key=None):
    return dict(
        method=method,
        val=dict(acc=acc),
        val_tempered=dict(nll=nll),
        train_flops_x=train_x,
        infer_flops_x=infer_x,
        key=key or f"{method}|{acc}|{nll}",
    )


def test_pick_breaks_ties_within_the_tolerance_by_tempered_nll():
    best = _run("plain", 0.900, 0.40)
    tied = _run("plain-aug", 0.900 - regime.TIE / 2, 0.30)
    beaten = _run("plain", 0.900 - 2 * regime.TIE, 0.10)
    assert regime.pick([best, tied, beaten]) is tied
    assert regime.pick([best, beaten]) is best


def _stage_one(methods, config="m1d-conv32", options=None):
    """Every stage-1 run of `methods`, validation accuracy rising with the budget."""
    records = {}
    for method in methods:
        lrs = regime.CONFIGS[config]["learning_rates"]
        runs = [("lrwd", lr, wd, 1.0) for lr in lrs for wd in regime.WEIGHT_DECAYS]
        runs += [("length", 0.01, 0.0, s) for s in regime.SHARES if s != regime.LRWD_SHARE]
        for stage, lr, wd, share in runs:
            key = f"{config}|{stage}|{method}|{lr}|{wd}|{share}|0"
            record = _run(method, 0.8 + share / 100, 0.3, train_x=share, key=key)
            records[key] = dict(record, config=config, stage=stage, lr=lr, wd=wd, budget=share)
    return records


def test_the_decision_waits_for_the_compared_methods_and_not_for_the_ensemble():
    options = argparse.Namespace(methods=list(regime.METHODS), quick=False, shares=regime.SHARES)
    compared = [m for m in regime.METHODS if m != "ensemble"]
    records = _stage_one(compared[:-1])
    assert regime.choices(records, "m1d-conv32", 3.0, options) is None
    records.update(_stage_one(compared[-1:]))
    chosen = regime.choices(records, "m1d-conv32", 3.0, options)
    assert set(chosen) == {"agrlearn", "plain"}
    assert chosen["plain"]["budget"] == 3.0
    records.update(_stage_one(["ensemble"]))
    chosen = regime.choices(records, "m1d-conv32", 1.5, options)
    assert set(chosen) == {"agrlearn", "plain", "ensemble"}
    assert chosen["ensemble"]["budget"] == 1.5


@pytest.mark.parametrize(
    "run, cap, fits",
    [
        (_run("wrap", 0.9, 0.3, train_x=1.5 * regime.ROUNDING), 1.5, True),
        (_run("wrap", 0.9, 0.3, train_x=1.6), 1.5, False),
        (_run("mimo", 0.9, 0.3, train_x=1.0, infer_x=1.19), 3.0, False),
        (_run("ensemble", 0.9, 0.3, train_x=2.0, infer_x=2.0), 3.0, True),
        (_run("ensemble", 0.9, 0.3, train_x=2.0, infer_x=2.0), 1.5, False),
    ],
)
def test_a_run_is_a_candidate_only_within_both_caps(run, cap, fits):
    assert regime.eligible(run, cap) is fits


@jax_only
@pytest.mark.parametrize("method", ["plain", "wrap", "mimo", "ensemble"])
@pytest.mark.parametrize("share", [0.5, 1.0, 3.0])
def test_epochs_spend_the_share_of_the_plain_models_flops(method, share):
    E, samples = 160, 3200
    epochs = regime.epochs_at("m1d-conv32", method, share, E, samples)
    spent = epochs * regime.epoch_cost("m1d-conv32", method, samples)
    target = share * E * regime.epoch_cost("m1d-conv32", "plain", samples)
    # Whole epochs: within half an epoch of the share.
    assert abs(spent - target) <= regime.epoch_cost("m1d-conv32", method, samples) / 2


def test_mimo_at_m2_fits_the_inference_cap_on_every_backbone():
    for config in regime.CONFIGS:
        assert regime.inference_share(config, "mimo") <= regime.INFERENCE_CAP, config
        assert regime.inference_share(config, "wrap") <= regime.INFERENCE_CAP, config


@pytest.mark.parametrize("shape", [(6, 40, 1), (6, 28, 28, 1)])
def test_augmentation_keeps_shape_and_content_and_is_reproducible(shape):
    x = np.random.default_rng(0).random(shape).astype("float32")
    a = regime.augment(x, np.random.default_rng(3))
    b = regime.augment(x, np.random.default_rng(3))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    # A crop after zero padding keeps part of the signal and adds only zeros.
    assert np.all(np.isin(a[a != 0], x))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("regime")
    argv = [
        "--quick",
        "--configs",
        "m1d-conv32",
        "--methods",
        "plain,wrap",
        "--records",
        str(out / "regime.jsonl"),
        "--report",
        str(out / "REGIME.md"),
    ]
    regime.main(argv)
    return out, argv


@jax_only
def test_quick_run_goes_through_every_stage_and_stores_predictions(quick):
    out, _ = quick
    records = study.load_records(out / "regime.jsonl")
    stages = {r["stage"] for r in records.values()}
    assert stages == {"lrwd", "length", "confirm"}
    for record in records.values():
        assert {"backend", "keras", "device", "date", "command"} <= set(record)
        stored = study.load_predictions(out / "regime.jsonl", record["key"])
        assert stored["val"].shape == (len(stored["val_labels"]), 10)
        np.testing.assert_allclose(stored["val"].sum(axis=1), 1.0, atol=2e-2)
        if record["stage"] == "confirm":
            assert len(stored["test"]) == len(stored["test_labels"])
    page = (out / "REGIME.md").read_text()
    assert "| `m1d-conv32` at 1.5 x |" in page and "Holm level" in page


@jax_only
def test_quick_run_resumes_without_training_and_regenerates_the_same_page(quick):
    out, argv = quick
    page, records = (out / "REGIME.md").read_bytes(), (out / "regime.jsonl").read_bytes()
    regime.main(argv)
    assert (out / "regime.jsonl").read_bytes() == records
    assert (out / "REGIME.md").read_bytes() == page


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(SystemExit):
        regime.main(["--report-only", "--methods", "plain,nope"])


def test_holm_levels_follow_the_step_down():
    from experiments import stats

    levels, rejected = stats.holm([0.01, 0.04, 0.03, 0.2])
    assert levels == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 3, 0.05 / 1])
    assert rejected == [True, False, False, False]
