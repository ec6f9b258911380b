"""`paired_comparison`: paired differences over seeds, their t intervals, the verdict."""

import numpy as np
import pytest
from scipy import stats

from keras_agrlearn import paired_comparison
from keras_agrlearn._comparison import t_quantile


@pytest.mark.parametrize("degrees", [1, 2, 4, 9, 30, 31, 45, 100, 1000])
def test_t_quantile_matches_scipy(degrees):
    assert t_quantile(degrees) == pytest.approx(stats.t.ppf(0.975, degrees), abs=2e-5)


@pytest.mark.parametrize("seeds", [2, 3, 5, 12])
def test_intervals_match_scipy(seeds, rng):
    plain = {"accuracy": rng.uniform(0.7, 0.8, seeds), "nll": rng.uniform(0.5, 0.7, seeds)}
    aggregated = {"accuracy": rng.uniform(0.7, 0.8, seeds), "nll": rng.uniform(0.5, 0.7, seeds)}
    result = paired_comparison(plain, aggregated)
    assert result["seeds"] == seeds
    for metric in ("accuracy", "nll"):
        differences = aggregated[metric] - plain[metric]
        low, high = stats.t.interval(
            0.95, seeds - 1, loc=differences.mean(), scale=stats.sem(differences)
        )
        assert result[metric]["difference"] == pytest.approx(differences.mean())
        assert (result[metric]["low"], result[metric]["high"]) == pytest.approx((low, high))
        assert result[metric]["plain"] == pytest.approx(plain[metric].mean())
        assert result[metric]["aggregated"] == pytest.approx(aggregated[metric].mean())


BASE = {"accuracy": [0.80, 0.82, 0.78, 0.81], "nll": [0.60, 0.58, 0.62, 0.59]}


def shifted(accuracy, nll, noise=(0.001, -0.001, 0.002, -0.002)):
    return {
        "accuracy": [a + accuracy + e for a, e in zip(BASE["accuracy"], noise)],
        "nll": [v + nll + e for v, e in zip(BASE["nll"], noise)],
    }


@pytest.mark.parametrize(
    "accuracy, nll, verdict",
    [
        (0.03, 0.0, "aggregation helps"),  # accuracy better, NLL unchanged
        (0.0, -0.05, "aggregation helps"),  # NLL better, accuracy unchanged
        (0.03, -0.05, "aggregation helps"),
        (-0.03, 0.0, "plain is better"),
        (0.0, 0.05, "plain is better"),
        (0.0, 0.0, "no difference shown"),
        (0.03, 0.05, "no difference shown"),  # the two disagree
    ],
)
def test_verdict(accuracy, nll, verdict):
    assert paired_comparison(BASE, shifted(accuracy, nll))["verdict"] == verdict


def test_noise_hides_a_small_difference():
    noisy = shifted(0.01, 0.0, noise=(0.05, -0.04, 0.03, -0.02))
    result = paired_comparison(BASE, noisy)
    assert result["accuracy"]["low"] < 0 < result["accuracy"]["high"]
    assert result["verdict"] == "no difference shown"


@pytest.mark.parametrize(
    "plain, aggregated, error, match",
    [
        ([0.8, 0.9], BASE, TypeError, r"`plain` must be a dict of per-seed scores"),
        ({"accuracy": [0.8, 0.9]}, BASE, ValueError, r"`plain` lacks the keys \['nll'\]"),
        (
            {"accuracy": [0.8], "nll": [0.5]},
            {"accuracy": [0.8], "nll": [0.5]},
            ValueError,
            r"hold 1 seed; an interval over seeds needs at least 2",
        ),
        (BASE, {"accuracy": [0.8, 0.9], "nll": [0.5, 0.4]}, ValueError, r"got lengths \[2, 4\]"),
        (BASE, {"accuracy": [0.8] * 4, "nll": [np.nan] * 4}, ValueError, r"finite numbers"),
        (BASE, {"accuracy": "0.8", "nll": [0.5] * 4}, ValueError, r"must be a sequence"),
    ],
    ids=["not_dict", "missing", "one_seed", "lengths", "nan", "string"],
)
def test_errors(plain, aggregated, error, match):
    with pytest.raises(error, match=match):
        paired_comparison(plain, aggregated)
