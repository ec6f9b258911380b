"""`evaluate_uncertainty`: every number against NumPy and scikit-learn references."""

import itertools

import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve

from keras_agrlearn import _scores
from keras_agrlearn import evaluate_uncertainty
from keras_agrlearn import members
from keras_agrlearn import wrap

CLASSES = 4
FEATURES = 5


def mlp(activation="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, activation=activation)(x))


def agrlearn(activation="softmax"):
    return wrap(mlp(activation), n=3, width=1.5, seed=0)


def data(rng, count=40, shift=0.0):
    # Large inputs give confident, varied predictions from random weights.
    x = (rng.normal(size=(count, FEATURES)) * 3 + shift).astype("float32")
    return x, rng.integers(0, CLASSES, count)


# ---------------------------------------------------------------------------
# References, written independently of the library
# ---------------------------------------------------------------------------


def reference_entropy(p):
    return np.array([-sum(v * np.log(v) for v in row if v > 0) for row in p])


def reference_calibration(probs, labels, num_bins=15):
    rows = np.arange(len(labels))
    nll = np.mean(-np.log(np.maximum(probs[rows, labels], 1e-7)))
    onehot = np.zeros_like(probs)
    onehot[rows, labels] = 1
    brier = np.mean(np.sum((probs - onehot) ** 2, axis=1))
    confidence, predicted = probs.max(1), probs.argmax(1)
    ece = 0.0
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        inside = (confidence >= low) & ((confidence < high) | (b == num_bins - 1))
        if inside.any():
            gap = abs(np.mean(predicted[inside] == labels[inside]) - confidence[inside].mean())
            ece += gap * inside.mean()
    return {"accuracy": np.mean(predicted == labels), "nll": nll, "ece": ece, "brier": brier}


def reference_members(member_probs, labels):
    votes = member_probs.argmax(-1)
    pairs = list(itertools.combinations(range(member_probs.shape[1]), 2))
    disagreement = np.mean([np.mean([row[s] != row[t] for s, t in pairs]) for row in votes])
    mean = member_probs.mean(1)
    mi = reference_entropy(mean) - np.mean(
        [reference_entropy(member_probs[:, s]) for s in range(member_probs.shape[1])], axis=0
    )
    return {
        "member_accuracy": np.mean(votes == labels[:, None]),
        "disagreement": disagreement,
        "mutual_information": mi,
    }


def reference_ood(negatives, positives):
    truth = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    scores = np.r_[negatives, positives]
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return {
        "ood_auroc": roc_auc_score(truth, scores),
        "ood_aupr": average_precision_score(truth, scores),
        "fpr95": fpr[np.searchsorted(tpr, 0.95)],
    }


def predictions(kind, model, x):
    """The prediction and member probabilities, straight from Keras."""
    if kind == "plain":
        return model.predict(x, verbose=0).astype("float64"), None
    if kind == "agrlearn":
        member_probs = members(model).predict(x, verbose=0).astype("float64")
        return model.predict(x, verbose=0).astype("float64"), member_probs
    member_probs = np.stack([m.predict(x, verbose=0) for m in model], axis=1).astype("float64")
    return member_probs.mean(1), member_probs


def ood_reference_scores(name, probs, member_probs):
    if name == "entropy":
        return reference_entropy(probs)
    if name == "msp":
        return -probs.max(1)
    return reference_members(member_probs, np.zeros(len(probs), int))["mutual_information"]


KINDS = {
    "plain": lambda: mlp(),
    "agrlearn": lambda: agrlearn(),
    "ensemble": lambda: [mlp(seed=s) for s in range(3)],
}


@pytest.mark.parametrize(
    "kind, ood_score",
    [
        (k, s)
        for k in KINDS
        for s in ("entropy", "msp", "mutual_information")
        if (k, s) != ("plain", "mutual_information")
    ],
)
def test_every_number_matches_the_references(kind, ood_score, rng):
    model = KINDS[kind]()
    x, y = data(rng)
    x_ood, _ = data(rng, count=25, shift=2.0)
    scores = evaluate_uncertainty(model, x, y, x_ood=x_ood, ood_score=ood_score)

    probs, member_probs = predictions(kind, model, x)
    ood_probs, ood_members = predictions(kind, model, x_ood)
    expected = reference_calibration(probs, y)
    if member_probs is not None:
        reference = reference_members(member_probs, y)
        reference["mutual_information"] = reference["mutual_information"].mean()
        expected.update(reference)
        # The members really differ, so the diversity numbers are not trivially 0.
        assert reference["disagreement"] > 0
    expected.update(
        reference_ood(
            ood_reference_scores(ood_score, probs, member_probs),
            ood_reference_scores(ood_score, ood_probs, ood_members),
        )
    )
    assert set(scores) == set(expected)
    for key, value in expected.items():
        assert isinstance(scores[key], float)
        assert scores[key] == pytest.approx(value, abs=2e-5), key


def test_plain_model_has_no_member_keys(rng):
    x, y = data(rng)
    scores = evaluate_uncertainty(mlp(), x, y)
    assert set(scores) == {"accuracy", "nll", "ece", "brier"}


def test_label_formats_and_batch_size_agree(rng):
    model = agrlearn()
    x, y = data(rng)
    whole = evaluate_uncertainty(model, x, y)
    onehot = np.eye(CLASSES, dtype="float32")[y]
    for labels in (y[:, None], onehot, y.astype("float32"), list(y)):
        assert evaluate_uncertainty(model, x, labels) == pytest.approx(whole, abs=1e-9)
    assert evaluate_uncertainty(model, x, y, batch_size=7) == pytest.approx(whole, abs=1e-5)
    numpy_integers = evaluate_uncertainty(
        model, x, y, batch_size=np.int64(7), num_bins=np.int32(15)
    )
    assert numpy_integers == pytest.approx(whole, abs=1e-5)


@pytest.mark.parametrize("make", [mlp, agrlearn], ids=["plain", "agrlearn"])
def test_logits_heads_with_from_logits(make, rng):
    probabilities, logits = make("softmax"), make(None)
    logits.set_weights(probabilities.get_weights())
    x, y = data(rng)
    x_ood, _ = data(rng, count=10, shift=2.0)
    expected = evaluate_uncertainty(probabilities, x, y, x_ood=x_ood, ood_score="msp")
    scores = evaluate_uncertainty(logits, x, y, x_ood=x_ood, ood_score="msp", from_logits=True)
    assert scores == pytest.approx(expected, abs=1e-5)
    with pytest.raises(
        ValueError, match=r"does not predict probabilities .* pass `from_logits=True`"
    ):
        evaluate_uncertainty(logits, x, y)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("sizes", [(30, 20), (5, 50), (1, 1), (100, 7)])
def test_ood_metrics_match_scikit_learn(sizes, ties, rng):
    negatives, positives = rng.normal(size=sizes[0]), rng.normal(0.7, size=sizes[1])
    if ties:
        negatives, positives = np.round(negatives), np.round(positives)
    expected = reference_ood(negatives, positives)
    assert _scores.auroc(negatives, positives) == pytest.approx(expected["ood_auroc"], abs=1e-12)
    assert _scores.average_precision(negatives, positives) == pytest.approx(
        expected["ood_aupr"], abs=1e-12
    )
    assert _scores.fpr_at_tpr(negatives, positives, 0.95) == pytest.approx(
        expected["fpr95"], abs=1e-12
    )


@pytest.mark.parametrize(
    "votes, expected",
    [
        ([[0, 0, 1]], 2 / 3),
        ([[2, 2, 2]], 0.0),
        ([[0, 1, 2]], 1.0),
        ([[0, 1]], 1.0),
        ([[3]], 0.0),
        ([[0, 0, 1, 1]], 4 / 6),
    ],
)
def test_disagreement_known_values(votes, expected):
    onehot = np.eye(CLASSES)[np.array(votes)] * 0.7 + 0.3 / CLASSES
    assert _scores.disagreement(onehot) == pytest.approx(expected)


def test_mutual_information_known_values():
    certain_and_different = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    agreeing = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    assert _scores.mutual_information(certain_and_different) == pytest.approx([np.log(2)])
    assert _scores.mutual_information(agreeing) == pytest.approx([0.0])


# ---------------------------------------------------------------------------
# Bad input: a clear error naming the argument, never a silent NaN
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_model():
    return mlp()


def _bad(rng, plain_model, **changes):
    x, y = data(rng, count=12)
    arguments = {"model": plain_model, "x": x, "y": y, **changes}
    model, x, y = arguments.pop("model"), arguments.pop("x"), arguments.pop("y")
    return lambda: evaluate_uncertainty(model, x, y, **arguments)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (
            {"y": np.zeros(11, int)},
            ValueError,
            r"`x` and `y` must hold the same number of samples, got 12 inputs and 11 labels",
        ),
        (
            {"x": np.zeros((0, FEATURES)), "y": np.zeros(0, int)},
            ValueError,
            r"Argument `x` is empty",
        ),
        ({"x_ood": np.zeros((0, FEATURES), "float32")}, ValueError, r"Argument `x_ood` is empty"),
        (
            {"x_ood": np.zeros((4, FEATURES + 1), "float32")},
            ValueError,
            r"`x_ood` must have the per-sample shape of `x`, got \(6,\) against \(5,\)",
        ),
        (
            {"x_ood": [np.zeros((4, FEATURES), "float32")] * 2},
            ValueError,
            r"`x_ood` must have the structure of `x`",
        ),
        (
            {"ood_score": "energy"},
            ValueError,
            r"`ood_score` must be one of 'entropy', 'msp', 'mutual_information', got "
            r"ood_score='energy'",
        ),
        (
            {"ood_score": "mutual_information"},
            ValueError,
            r"`ood_score`: 'mutual_information' needs a model with members",
        ),
        (
            {"y": np.full(12, CLASSES)},
            ValueError,
            r"`y`: labels must be integers in \[0, 4\) for a model with 4 classes, got \[4, 4, 4\]",
        ),
        ({"y": -np.ones(12, int)}, ValueError, r"`y`: labels must be integers in \[0, 4\)"),
        ({"y": np.full(12, 0.5)}, ValueError, r"`y` must hold integer class labels"),
        ({"y": np.full(12, np.nan)}, ValueError, r"`y` must hold integer class labels"),
        (
            {"y": np.zeros((12, 3))},
            ValueError,
            r"`y` must hold integer labels \(N,\) or \(N, 1\) or one-hot labels \(N, 4\)",
        ),
        (
            {"y": np.full((12, CLASSES), 0.5)},
            ValueError,
            r"`y`: one-hot labels of shape \(12, 4\) must be non-negative rows that sum to 1",
        ),
        (
            {"batch_size": 0},
            ValueError,
            r"Argument `batch_size` \(the batch size of predict, or None\) must be an integer "
            r">= 1, got batch_size=0",
        ),
        (
            {"batch_size": 2.0},
            TypeError,
            r"Argument `batch_size` .* must be an integer >= 1, got 2.0 of type float",
        ),
        (
            {"num_bins": 0},
            ValueError,
            r"Argument `num_bins` \(the number of confidence bins\) must be an integer >= 1, "
            r"got num_bins=0",
        ),
        ({"num_bins": "15"}, TypeError, r"Argument `num_bins` .* got '15' of type str"),
        (
            {"from_logits": "no"},
            TypeError,
            r"Argument `from_logits` must be True or False, got 'no'",
        ),
        ({"model": "model"}, TypeError, r"`model` must be a keras.Model or a non-empty list"),
        ({"model": []}, TypeError, r"`model` must be a keras.Model or a non-empty list"),
        (
            {"x": np.full((12, FEATURES), np.nan, "float32")},
            ValueError,
            r"Argument `x` contains 60 NaN or infinite values",
        ),
        (
            {"x_ood": np.full((3, FEATURES), np.inf, "float32")},
            ValueError,
            r"Argument `x_ood` contains 15 NaN or infinite values",
        ),
    ],
    ids=[
        "lengths",
        "empty_x",
        "empty_ood",
        "ood_shape",
        "ood_structure",
        "unknown_score",
        "mi_without_members",
        "label_too_large",
        "label_negative",
        "label_fraction",
        "label_nan",
        "label_shape",
        "onehot_not_rows",
        "batch_size",
        "batch_size_float",
        "num_bins",
        "num_bins_str",
        "from_logits_str",
        "not_a_model",
        "empty_ensemble",
        "nan_inputs",
        "inf_ood_inputs",
    ],
)
def test_bad_input_raises_clear_errors(changes, error, match, rng, plain_model):
    with pytest.raises(error, match=match):
        _bad(rng, plain_model, **changes)()


def test_model_predicting_nan_is_refused(rng):
    inputs = keras.Input((FEATURES,))
    head = keras.layers.Dense(CLASSES, activation="softmax")
    model = keras.Model(inputs, head(inputs))
    head.bias.assign(np.full(CLASSES, np.nan, "float32"))
    x, y = data(rng, count=6)
    with pytest.raises(ValueError, match=r"predicts NaN or infinite values for 6 rows"):
        evaluate_uncertainty(model, x, y)


def test_model_with_a_single_unit_is_refused(rng):
    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    x, _ = data(rng, count=6)
    with pytest.raises(ValueError, match=r"needs class scores \(N, K\) with K >= 2"):
        evaluate_uncertainty(model, x, np.zeros(6, int))


def test_ensemble_members_must_agree_on_the_classes(rng):
    inputs = keras.Input((FEATURES,))
    other = keras.Model(inputs, keras.layers.Dense(CLASSES + 1, activation="softmax")(inputs))
    x, y = data(rng, count=6)
    with pytest.raises(ValueError, match=r"the models of the ensemble predict different shapes"):
        evaluate_uncertainty([mlp(), other], x, y)
