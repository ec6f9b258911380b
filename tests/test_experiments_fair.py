"""The compute-fair study: its decision rule on made-up records, and a smoke run at tiny sizes."""

import math

import keras
import numpy as np
import pytest

from experiments import fair
from experiments import fair_configs
from experiments import fair_report
from experiments import study


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    if keras.backend.backend() != "jax":
        pytest.skip("the study runs on JAX (its report names the backend); one smoke run suffices")
    out = tmp_path_factory.mktemp("fair")
    argv = [
        "--quick",
        "--configs",
        "mnist1d-128",
        "--records",
        str(out / "fair.jsonl"),
        "--report",
        str(out / "FAIR.md"),
        "--cache",
        str(out / "cache"),
    ]
    fair.main(argv)
    return out, argv


def test_quick_run_records_every_arm_with_its_cost(quick_run):
    out, _ = quick_run
    records = list(study.load_records(out / "fair.jsonl").values())
    arms = {r["arm"] for r in records if r["phase"] == "arms"}
    assert arms == set(fair.ARMS) - set(fair_configs.ON_REQUEST)
    assert {r["arm"] for r in records if r["phase"] == "data"} == set(fair_configs.DATA_ARMS)
    by_arm = {r["arm"]: r for r in records if r["phase"] == "arms"}
    assert by_arm["plain"]["train_flops_x"] == pytest.approx(1.0)
    assert by_arm["ensemble"]["train_flops_x"] == pytest.approx(3.0)
    # Wider hidden layers cost about width^2 per pass.
    assert 2.5 < by_arm["plain-wide"]["train_flops_x"] < 3.2
    assert set(by_arm["wrap-paper"]["evaluations"]) == {"replicate", "group"}
    paper = by_arm["wrap-paper"]["evaluations"]
    assert paper["group"]["infer_flops_x"] == pytest.approx(paper["replicate"]["infer_flops_x"] / 3)
    for record in records:
        for ev in record["evaluations"].values():
            for split in ("val", "test"):
                assert 0.0 <= ev[split]["acc"] <= 1.0 and ev[split]["nll"] > 0
    report = (out / "FAIR.md").read_text()
    for heading in (
        "## Budgets",
        "## `mnist1d-128`",
        "## Decision",
        "## Data efficiency",
        "## Uncertainty against the deep ensemble",
    ):
        assert heading in report
    assert (out / "fair_budgets.png").stat().st_size > 0


def test_rerun_trains_nothing(quick_run):
    out, argv = quick_run
    before = (out / "fair.jsonl").read_text()
    fair.main(argv)
    assert (out / "fair.jsonl").read_text() == before


def budget_record(config, budget, seed, acc):
    ev = {"replicate": {"val": {"acc": acc}}}
    return {"config": config, "phase": "budget", "budget": budget, "seed": seed, "evaluations": ev}


@pytest.mark.parametrize(
    "accuracies, expected",
    [
        ({20: 0.80, 40: 0.90, 80: 0.903, 160: 0.90}, 40),  # flat from 40 on
        ({20: 0.80, 40: 0.85, 80: 0.88, 160: 0.92}, 160),  # still rising
        ({20: 0.95, 40: 0.94, 80: 0.93, 160: 0.92}, 20),  # overfits
    ],
)
def test_budget_is_the_smallest_within_half_a_point_of_the_best(accuracies, expected):
    records = {}
    for budget, acc in accuracies.items():
        for seed in range(fair.BUDGET_SEEDS):
            records[f"{budget}-{seed}"] = budget_record("mnist1d-16", budget, seed, acc)
    assert fair.choose_budget(records, "mnist1d-16") == expected
    del records["160-1"]
    assert fair.choose_budget(records, "mnist1d-16") is None


def row(arm, train_x, infer_x, accs):
    return {
        "arm": arm,
        "train_x": train_x,
        "infer_x": infer_x,
        "by_seed": [(s, {"val": {"acc": a}, "test": {"acc": a}}) for s, a in enumerate(accs)],
    }


def test_paired_interval_matches_the_t_distribution():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = row("wrap-defaults", 6, 3, [0.90, 0.92, 0.91, 0.95, 0.93])
    b = row("plain", 1, 1, [0.89, 0.90, 0.91, 0.91, 0.90])
    mean, half, k = fair_report.paired(a, b, "val", "acc")
    diffs = np.array([0.01, 0.02, 0.0, 0.04, 0.03])
    assert k == 5 and mean == pytest.approx(diffs.mean())
    expected = scipy_stats.t.ppf(0.975, 4) * diffs.std(ddof=1) / math.sqrt(5)
    assert half == pytest.approx(expected, rel=1e-3)
    assert fair_report.verdict(mean, half) == "win"
    assert fair_report.verdict(-mean, half) == "loss"
    assert fair_report.verdict(0.001, half) == "tie"


def test_best_matched_plain_arm_costs_no_more_in_either_flops():
    rows = {
        "plain": row("plain", 1, 1, [0.80]),
        "plain-long-matched": row("plain-long-matched", 6, 1, [0.90]),
        "plain-wide-long2": row("plain-wide-long2", 5.7, 2.8, [0.95]),
        "ensemble": row("ensemble", 3, 3, [0.85]),
    }
    defaults = row("wrap-defaults", 6.3, 3.1, [0.9])
    mimo = row("wrap-mimo", 2.3, 1.1, [0.9])
    group = row("wrap-group", 1.2, 0.4, [0.9])
    assert fair_report.best_matched(rows, defaults)[0] == "plain-wide-long2"
    assert fair_report.best_matched(rows, mimo)[0] == "plain"
    assert fair_report.best_matched(rows, group) == (None, None)
    # wrap-n2 costs less training than plain: only plain-short is matched.
    n2 = row("wrap-n2", 0.81, 1.07, [0.9])
    assert fair_report.best_matched(rows, n2) == (None, None)
    rows["plain-short"] = row("plain-short", 0.8, 1, [0.7])
    assert fair_report.best_matched(rows, n2)[0] == "plain-short"


def test_ordered_batches_repeat_per_seed_and_change_per_epoch():
    x, y = np.arange(10, dtype="float32")[:, None], np.arange(10)
    first, second = fair.OrderedBatches(x, y, 4, seed=3), fair.OrderedBatches(x, y, 4, seed=3)
    assert len(first) == 3
    np.testing.assert_array_equal(first[0][1], second[0][1])
    epoch0 = np.concatenate([first[i][1] for i in range(3)])
    first.on_epoch_end()
    epoch1 = np.concatenate([first[i][1] for i in range(3)])
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert not np.array_equal(epoch0, epoch1)


def test_unknown_configuration_is_refused():
    with pytest.raises(SystemExit):
        fair.parse(["--configs", "mnist1d-16,nope"])


def test_unknown_arm_is_refused():
    with pytest.raises(SystemExit):
        fair.parse(["--arms", "plain,wider"])


def budgets_of(config, e):
    grid = fair.CONFIGS[config]["budgets"]
    return {
        f"{config}-{b}-{s}": budget_record(config, b, s, 0.9 if b >= e else 0.5)
        for b in grid
        for s in range(fair.BUDGET_SEEDS)
    }


def test_full_set_configuration_borrows_the_convnet_budget_and_runs_its_own_arms():
    options = fair.parse(["--configs", "fashion-convnet,fashion-convnet-full"])
    jobs = fair.queue(options, {})
    assert all(j is None or j["config"] == "fashion-convnet" for j in jobs)
    records = budgets_of("fashion-convnet", 10)
    jobs = [j for j in fair.queue(options, records) if j["phase"] != "budget"]
    full = [j for j in jobs if j["config"] == "fashion-convnet-full"]
    assert {j["arm"] for j in full} == {"plain", "wrap-n2", "plain-short"}
    assert {j["budget"] for j in full} == {10} and {j["seed"] for j in full} == {0, 1, 2}
    convnet = [j for j in jobs if j["config"] == "fashion-convnet" and j["phase"] == "arms"]
    assert {j["arm"] for j in convnet} == set(fair_configs.CONFIRMATION_ARMS)
    long2 = next(j for j in convnet if j["arm"] == "plain-long2")
    assert long2["epochs"] == 20
    data = [j for j in jobs if j["phase"] == "data"]
    assert {j["fraction"] for j in data} == {0.5}
    # Half the images, twice the epochs: the same optimizer steps.
    assert {j["epochs"] for j in data if j["arm"] == "plain"} == {20}


def test_arms_option_restricts_the_queue():
    options = fair.parse(["--configs", "fashion-resnet8", "--arms", "plain,wrap-n2"])
    jobs = fair.queue(options, budgets_of("fashion-resnet8", 5))
    assert {j["arm"] for j in jobs if j["phase"] == "arms"} == {"plain", "wrap-n2"}


@pytest.mark.parametrize(
    "fashion_train, shares",
    [("10000", [0.1, 0.2, 1.0]), ("50000", [0.5, 1.0])],
)
def test_data_efficiency_points_are_shares_of_the_full_training_set(fashion_train, shares):
    options = fair.parse(["--configs", "fashion-convnet", "--fashion-train", fashion_train])
    points = fair_report.data_points("fashion-convnet", options)
    assert [share for *_, share in points] == shares
    assert points[-1][0] == (
        "fashion-convnet-full" if fashion_train == "10000" else "fashion-convnet"
    )


def test_configuration_data_is_its_slice_of_the_training_images():
    options = fair.parse(["--configs", "fashion-convnet-full", "--fashion-train", "3"])
    x = np.arange(60000)[:, None]
    data = ((x[:50000], x[:50000, 0]), (x[:2], x[:2, 0]), (x[:2], x[:2, 0]))
    (small, _), *_ = fair.config_data("fashion-convnet", data, options)
    (full, _), *_ = fair.config_data("fashion-convnet-full", data, options)
    assert len(small) == 3 and len(full) == 50000
    np.testing.assert_array_equal(small, full[:3])


def test_decision_names_an_arm_refused_for_a_confirmation_loss():
    configs = [("a", "selection"), ("b", "selection"), ("c", "confirmation")]
    table = {"wrap-n2": {"a": "win", "b": "tie", "c": "loss"}, "wrap-mimo": {"a": "tie"}}
    best, wins = fair_report.chosen_default(table, configs)
    assert best is None
    text = fair_report.decision_text(table, configs, best, wins)
    assert "`wrap-n2` wins on `a` but loses on the confirmation data (`c`)" in text
    table["wrap-n2"]["c"] = "tie"
    best, wins = fair_report.chosen_default(table, configs)
    assert (best, wins) == ("wrap-n2", 1)
    assert "defaults become `wrap-n2`" in fair_report.decision_text(table, configs, best, wins)


def test_plain_short_trains_for_wrap_n2s_training_flops():
    options = fair.parse(["--configs", "fashion-convnet"])
    share = fair.n2_cost("fashion-convnet", options.samples["fashion"])
    assert 0.6 < share < 0.95
    jobs = fair.queue(options, budgets_of("fashion-convnet", 20))
    (short,) = {j["epochs"] for j in jobs if j["arm"] == "plain-short"}
    assert short == round(20 * share) < 20


def test_on_request_arms_run_only_where_named():
    records = budgets_of("fashion-convnet", 20)
    default = fair.queue(fair.parse(["--configs", "fashion-convnet"]), records)
    assert "wrap-n2-long2" not in {j["arm"] for j in default}
    named = fair.parse(
        ["--configs", "fashion-convnet", "--arms", "wrap-n2-long2", "--phases", "arms"]
    )
    jobs = [j for j in fair.queue(named, records) if j["phase"] == "arms"]
    assert {(j["arm"], j["epochs"]) for j in jobs} == {("wrap-n2-long2", 40)}
