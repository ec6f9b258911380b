"""The study engine (experiments/study.py) on a toy study, and the shared statistics."""

import ast
import datetime
import json
import math

import keras
import numpy as np
import pytest
import study_engine_helper as toy

from experiments import stats
from experiments import study
from experiments import tables


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def toy_argv(tmp_path, *extra):
    return [
        "--records",
        str(tmp_path / "toy.jsonl"),
        "--report",
        str(tmp_path / "TOY.md"),
        "--device",
        "toy device",
        *extra,
    ]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    if keras.backend.backend() != "jax":
        pytest.skip("the engine starts its workers as processes; one backend suffices")
    tmp_path = tmp_path_factory.mktemp("toy")
    argv = toy_argv(tmp_path, "--workers", "2", "--pause", "0.2")
    toy.main(argv)
    return tmp_path, argv


def test_two_workers_run_every_job_once_and_the_waiting_job_last(two_workers):
    tmp_path, _ = two_workers
    records = lines(tmp_path / "toy.jsonl")
    keys = [r["key"] for r in records]
    assert sorted(keys) == sorted([f"square|{s}" for s in range(toy.SEEDS)] + ["total|-1"])
    assert keys[-1] == "total|-1"
    assert records[-1]["value"] == sum(s**2 for s in range(toy.SEEDS))
    assert "- total|-1: 14" in (tmp_path / "TOY.md").read_text()


def test_records_are_stamped(two_workers):
    tmp_path, _ = two_workers
    for record in lines(tmp_path / "toy.jsonl"):
        assert record["backend"] == keras.backend.backend()
        assert record["keras"] == keras.__version__
        assert record["device"] == "toy device"
        assert record["date"] == datetime.date.today().isoformat()
        # The user's command: without the options the engine adds for its workers.
        assert record["command"].startswith("python experiments/toy.py --records ")
        assert "--workers 2" in record["command"]
        for internal in ("--worker ", "--claims", "--deadline"):
            assert internal not in record["command"]


def test_rerun_starts_no_worker(two_workers, monkeypatch):
    tmp_path, argv = two_workers
    before = (tmp_path / "toy.jsonl").read_text()
    monkeypatch.setattr(study.subprocess, "Popen", pytest.fail)
    toy.main(argv)
    assert (tmp_path / "toy.jsonl").read_text() == before


def test_deadline_stops_claiming_and_the_study_resumes(tmp_path):
    if keras.backend.backend() != "jax":
        pytest.skip("the engine starts its workers as processes; one backend suffices")
    # A run recorded before: kept, never trained again.
    (tmp_path / "toy.jsonl").write_text(
        json.dumps(dict(key="square|1", name="square", seed=1, value=-7)) + "\n"
    )
    toy.main(toy_argv(tmp_path, "--deadline", "0"))
    assert [r["key"] for r in lines(tmp_path / "toy.jsonl")] == ["square|1"]
    toy.main(toy_argv(tmp_path))
    records = {r["key"]: r for r in lines(tmp_path / "toy.jsonl")}
    assert len(lines(tmp_path / "toy.jsonl")) == len(records) == toy.SEEDS + 1
    assert records["square|1"]["value"] == -7 and "pid" not in records["square|1"]
    assert records["total|-1"]["value"] == 0 - 7 + 4 + 9


def test_report_only_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(study.subprocess, "Popen", pytest.fail)
    toy.main(toy_argv(tmp_path, "--report-only"))
    assert not (tmp_path / "toy.jsonl").exists()
    assert (tmp_path / "TOY.md").exists()


def test_page_command_leaves_out_where_pages_go_and_how_runs_run(tmp_path):
    records = study.ROOT / "docs" / "results" / "x.jsonl"
    argv = ["--report-only", "--workers", "2", "--records", str(records), "--report=/tmp/X.md"]
    argv += ["--deadline", "60", "--phases", "a b", "--device", "GPU", "--out", str(tmp_path)]
    assert study.page_command("toy", argv) == (
        "python experiments/toy.py --records docs/results/x.jsonl --phases 'a b'"
    )
    kept = study.page_command("toy", ["--report-only"], flags=())
    assert kept == "python experiments/toy.py --report-only"


def test_keys_and_record_files():
    job = dict(config="c", phase="arms", arm="plain", seed=0, budget=10, fraction=1.0)
    fields = ("config", "phase", "arm", "seed", "budget", "fraction")
    assert study.job_key(job, fields) == "c|arms|plain|0|10|1.0"
    sharded = study.Study(
        name="s",
        key_fields=("a",),
        key=lambda job: f"a={job['a']}",
        shard="b",
        jobs=None,
        run=None,
        report=None,
    )
    assert sharded.key_of(dict(a=1, b="x")) == "a=1"
    assert sharded.records_file("out", dict(a=1, b="x")).as_posix() == "out/s-x.jsonl"
    assert toy.TOY.records_file("r.jsonl", dict(name="n", seed=0)).as_posix() == "r.jsonl"


def test_records_of_a_folder_are_read_in_name_order_last_per_key(tmp_path):
    (tmp_path / "s-b.jsonl").write_text(json.dumps(dict(key="k", v=2)) + "\n")
    (tmp_path / "s-a.jsonl").write_text(
        json.dumps(dict(key="k", v=1)) + "\n\n" + json.dumps(dict(key="j", v=0)) + "\n"
    )
    assert study.load_records(tmp_path) == {"k": dict(key="k", v=2), "j": dict(key="j", v=0)}
    assert study.load_records(tmp_path / "none.jsonl") == {}


def test_predictions_round_trip(tmp_path, rng):
    records = tmp_path / "study.jsonl"
    probs = rng.dirichlet(np.ones(10), size=50)
    probs[0] = np.eye(10)[3]  # certain predictions survive the logarithm
    labels = rng.integers(0, 10, size=50)
    path = study.save_predictions(records, "c|arms|wrap/n2|0", probs=probs, labels=labels)
    assert path == tmp_path / "study" / "c_arms_wrap-n2_0.npz"
    loaded = study.load_predictions(records, "c|arms|wrap/n2|0")
    assert set(loaded) == {"probs", "labels"}
    np.testing.assert_array_equal(loaded["labels"], labels)
    # float16 log-probabilities: each within half a float16 spacing (2^-11 relative);
    # a zero probability comes back as exp(-60).
    expected = np.maximum(np.log(np.clip(probs, 1e-30, None)), -60.0)
    np.testing.assert_allclose(np.log(loaded["probs"]), expected, rtol=2**-11, atol=1e-12)
    assert loaded["probs"][0, 3] == 1.0 and loaded["probs"][0, 0] < 1e-25


def test_paired_bootstrap_of_a_constant_difference_is_that_difference():
    a = np.full((3, 40), 0.7)
    result = stats.paired_bootstrap(a, a - 0.25, resamples=200)
    assert result["mean"] == pytest.approx(0.25)
    assert result["low"] == pytest.approx(0.25) and result["high"] == pytest.approx(0.25)
    assert result["p"] == 0.0


def test_paired_bootstrap_over_examples_matches_the_normal_interval(rng):
    # One seed: only the evaluation examples vary, and the mean of 4,000
    # paired 0/1 differences is close to normal.
    a = rng.binomial(1, 0.8, size=(1, 4000)).astype(float)
    b = rng.binomial(1, 0.78, size=(1, 4000)).astype(float)
    diff = a - b
    result = stats.paired_bootstrap(a, b, resamples=4000)
    half = 1.96 * diff.std() / math.sqrt(diff.size)
    assert result["mean"] == pytest.approx(diff.mean())
    assert result["low"] == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert result["high"] == pytest.approx(diff.mean() + half, abs=0.15 * half)
    assert result == stats.paired_bootstrap(a, b, resamples=4000)


def test_paired_bootstrap_counts_the_seeds_spread():
    # Examples agree within each seed, seeds disagree: only the draw of seeds
    # matters. Of the 27 equally likely draws of 3 seeds, one has mean -0.3 and
    # one 0.4 (each 3.7 %, so they are the 2.5 % and 97.5 % quantiles), and 10
    # have a negative mean: p = 2 * 10 / 27.
    diff = np.repeat(np.array([[-0.3], [0.1], [0.4]]), 30, axis=1)
    result = stats.paired_bootstrap(diff, np.zeros_like(diff), resamples=4000)
    assert result["mean"] == pytest.approx(0.2 / 3)
    assert result["low"] == pytest.approx(-0.3) and result["high"] == pytest.approx(0.4)
    assert result["p"] == pytest.approx(2 * 10 / 27, abs=0.05)


def test_paired_bootstrap_refuses_unpaired_shapes():
    with pytest.raises(ValueError, match="seeds, examples"):
        stats.paired_bootstrap(np.zeros((2, 3)), np.zeros((2, 4)))


def test_holm_on_a_textbook_example():
    # p sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: the last two are kept.
    levels, rejected = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert levels == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert rejected == [True, False, False, True]
    # A later p below its own level is not rejected once the sequence stops.
    assert stats.holm([0.02, 0.03, 0.04])[1] == [False, False, False]
    assert stats.holm([0.001, 0.2, 0.04])[1] == [True, False, False]


def test_paired_t_and_verdict():
    mean, half = stats.paired_t([0.01, 0.02, 0.0, 0.04, 0.03])
    assert mean == pytest.approx(0.02)
    assert half == pytest.approx(2.776 * np.std([0.01, 0.02, 0.0, 0.04, 0.03], ddof=1) / 5**0.5)
    assert stats.verdict(mean - half, mean + half) == "win"
    assert stats.verdict(-0.3, -0.1) == "loss" and stats.verdict(-0.1, 0.1) == "tie"
    assert math.isnan(stats.paired_t([0.1])[1]) and stats.verdict(math.nan, 1.0) == "n/a"
    assert stats.t_quantile(4) == 2.776 and stats.t_quantile(12) == 2.228
    assert stats.t_quantile(40) == 1.96


def test_table_helpers():
    assert tables.markdown_table(["a", "b"], [[1, ""]]) == ["| a | b |", "|---|---|", "| 1 |  |"]
    assert tables.fmt_diff(0.012, 0.005) == "+1.20 [+0.70, +1.70]"
    assert tables.fmt_diff(0.012, math.nan) == "+1.20"
    assert tables.fmt_diff(math.nan, math.nan) == "-"
    assert tables.fmt_interval(-0.5, -1.0, 0.25, scale=1.0, digits=1) == "-0.5 [-1.0, +0.2]"
    assert tables.shown_path(study.ROOT / "docs" / "FAIR.md", study.ROOT) == "docs/FAIR.md"
    assert tables.shown_path("/elsewhere/x", study.ROOT) == "/elsewhere/x"


def test_no_import_circle_in_experiments():
    """No module of experiments/ imports, directly or not, one that imports it."""
    folder = study.ROOT / "experiments"
    names = {path.stem for path in folder.glob("*.py")}
    imports = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "experiments":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "experiments."
            ):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith("experiments.")
                }
        imports[path.stem] = found & names

    def reaches(start, target, seen=()):
        return any(
            name == target or (name not in seen and reaches(name, target, (*seen, name)))
            for name in imports[start]
        )

    assert imports["fair"] >= {"fair_configs", "fair_report", "study"}
    assert [name for name in sorted(names) if reaches(name, name)] == []
