import keras
import numpy as np
import pytest

from keras_agrlearn.metrics import BrierScore
from keras_agrlearn.metrics import ExpectedCalibrationError
from keras_agrlearn.metrics import NegativeLogLikelihood


def reference_nll(labels, probs):
    return float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))


def reference_brier(labels, probs):
    onehot = np.eye(probs.shape[-1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=-1)))


def reference_ece(labels, probs, num_bins):
    """Guo et al. (2017): sum over bins of |accuracy - confidence| * share."""
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    total = 0.0
    for b in range(num_bins):
        members = bins == b
        if members.any():
            total += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return total


def random_probs(rng, count=64, classes=5):
    logits = rng.normal(size=(count, classes)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return logits.astype("float32"), probs.astype("float32"), rng.integers(0, classes, count)


def result(metric, *args, **kwargs):
    metric.update_state(*args, **kwargs)
    return float(metric.result())


@pytest.mark.parametrize("num_bins", [1, 10, 15])
@pytest.mark.parametrize("from_logits", [False, True])
def test_matches_numpy_reference(rng, num_bins, from_logits):
    logits, probs, labels = random_probs(rng)
    y_pred = logits if from_logits else probs
    ece = result(ExpectedCalibrationError(num_bins, from_logits=from_logits), labels, y_pred)
    nll = result(NegativeLogLikelihood(from_logits=from_logits), labels, y_pred)
    brier = result(BrierScore(from_logits=from_logits), labels, y_pred)
    np.testing.assert_allclose(ece, reference_ece(labels, probs, num_bins), atol=1e-5)
    np.testing.assert_allclose(nll, reference_nll(labels, probs), rtol=1e-4)
    np.testing.assert_allclose(brier, reference_brier(labels, probs), rtol=1e-5)


@pytest.mark.parametrize(
    "metric_class", [ExpectedCalibrationError, NegativeLogLikelihood, BrierScore]
)
def test_label_formats_and_batching_agree(rng, metric_class):
    _, probs, labels = random_probs(rng)
    one_hot = np.eye(5, dtype="float32")[labels]
    whole = result(metric_class(), labels, probs)
    assert result(metric_class(), labels[:, None], probs) == pytest.approx(whole, abs=1e-6)
    assert result(metric_class(), one_hot, probs) == pytest.approx(whole, abs=1e-6)
    # The state holds sums, so batches of any size give the whole-set value.
    split = metric_class()
    split.update_state(labels[:10], probs[:10])
    split.update_state(labels[10:], probs[10:])
    assert float(split.result()) == pytest.approx(whole, abs=1e-6)
    split.reset_state()
    assert float(split.result()) == 0.0


@pytest.mark.parametrize(
    "metric_class", [ExpectedCalibrationError, NegativeLogLikelihood, BrierScore]
)
def test_sample_weight_counts_samples(rng, metric_class):
    _, probs, labels = random_probs(rng, count=6)
    weights = np.array([2, 0, 1, 1, 0, 3], dtype="float32")
    repeated = np.repeat(np.arange(6), weights.astype(int))
    weighted = result(metric_class(), labels, probs, sample_weight=weights)
    expanded = result(metric_class(), labels[repeated], probs[repeated])
    assert weighted == pytest.approx(expanded, abs=1e-6)


@pytest.mark.parametrize(
    "labels, probs, ece, nll, brier",
    [
        ([0, 1], [[1.0, 0.0], [0.0, 1.0]], 0.0, 0.0, 0.0),
        ([0, 1], [[0.9, 0.1], [0.7, 0.3]], 0.4, (-np.log(0.9) - np.log(0.3)) / 2, 0.5),
        # A zero probability for the true class is clipped, not infinite.
        ([1], [[1.0, 0.0]], 1.0, -np.log(1e-7), 2.0),
        ([2], [[0.25, 0.25, 0.5]], 0.5, np.log(2), 0.375),
    ],
)
def test_known_values(labels, probs, ece, nll, brier):
    probs = np.array(probs, dtype="float32")
    assert result(ExpectedCalibrationError(10), labels, probs) == pytest.approx(ece, abs=1e-6)
    assert result(NegativeLogLikelihood(), labels, probs) == pytest.approx(nll, rel=1e-4)
    assert result(BrierScore(), labels, probs) == pytest.approx(brier, abs=1e-6)


@pytest.mark.parametrize(
    "metric",
    [
        ExpectedCalibrationError(num_bins=7, from_logits=True, name="e7"),
        NegativeLogLikelihood(from_logits=True, epsilon=1e-5, name="nll5"),
        BrierScore(from_logits=True, name="b"),
    ],
    ids=["ece", "nll", "brier"],
)
def test_serialization_round_trip(rng, metric):
    logits, _, labels = random_probs(rng)
    config = keras.saving.serialize_keras_object(metric)
    assert config["registered_name"].startswith("keras_agrlearn>")
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(clone) is type(metric)
    assert clone.get_config() == metric.get_config()
    assert result(clone, labels, logits) == pytest.approx(result(metric, labels, logits))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: ExpectedCalibrationError(num_bins=0),
            ValueError,
            r"Argument `num_bins` \(the number of confidence bins\) must be an integer >= 1, "
            r"got num_bins=0",
        ),
        (
            lambda: ExpectedCalibrationError(num_bins=2.5),
            TypeError,
            r"Argument `num_bins` .* must be an integer >= 1, got 2.5 of type float",
        ),
        (
            lambda: ExpectedCalibrationError(num_bins="15"),
            TypeError,
            r"Argument `num_bins` .* got '15' of type str",
        ),
        (
            lambda: ExpectedCalibrationError(num_bins=True),
            TypeError,
            r"Argument `num_bins` .* got True of type bool",
        ),
        (
            lambda: NegativeLogLikelihood(epsilon=0),
            ValueError,
            r"Argument `epsilon` \(the smallest probability used\) must be a finite number > "
            r"0, got epsilon=0",
        ),
        (
            lambda: NegativeLogLikelihood(epsilon=float("nan")),
            ValueError,
            r"Argument `epsilon` .* got epsilon=nan",
        ),
        (
            lambda: NegativeLogLikelihood(epsilon="1e-7"),
            TypeError,
            r"Argument `epsilon` .* got '1e-7' of type str",
        ),
        (
            lambda: BrierScore(from_logits="yes"),
            TypeError,
            r"Argument `from_logits` must be True or False, got 'yes'",
        ),
        (
            lambda: NegativeLogLikelihood(from_logits=1),
            TypeError,
            r"Argument `from_logits` must be True or False, got 1",
        ),
    ],
    ids=[
        "bins-zero",
        "bins-float",
        "bins-str",
        "bins-bool",
        "epsilon-zero",
        "epsilon-nan",
        "epsilon-str",
        "brier-logits-str",
        "nll-logits-int",
    ],
)
def test_invalid_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("num_bins", [np.int64(10), np.int32(10), np.uint8(10)], ids=str)
def test_numpy_integer_bins_are_accepted(num_bins):
    metric = ExpectedCalibrationError(num_bins=num_bins)
    assert metric.num_bins == 10 and type(metric.num_bins) is int
    assert metric.get_config()["num_bins"] == 10


def test_in_compile_fit_and_evaluate(rng, jit_compile):
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=[NegativeLogLikelihood(), ExpectedCalibrationError(), BrierScore()],
        jit_compile=jit_compile,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    scores = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    probs = model.predict(x, verbose=0)
    assert scores["nll"] == pytest.approx(scores["loss"], rel=1e-4)
    assert scores["nll"] == pytest.approx(reference_nll(y, probs), rel=1e-4)
    assert scores["ece"] == pytest.approx(reference_ece(y, probs, 15), abs=1e-5)
    assert scores["brier"] == pytest.approx(reference_brier(y, probs), rel=1e-4)
