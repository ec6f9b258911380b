"""Temperature scaling: `fit_temperature`, `TemperatureScaling`, `calibrate_temperature`."""

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras.src import testing
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

import keras_agrlearn
from keras_agrlearn import TemperatureScaling
from keras_agrlearn import calibrate_temperature
from keras_agrlearn import evaluate_uncertainty
from keras_agrlearn import fit_temperature

CLASSES = 4
FEATURES = 5


def made_up_logits(rng, count, scale, noise):
    """Logits that favour the label by `scale`, with Gaussian noise."""
    labels = rng.integers(0, CLASSES, count)
    logits = rng.normal(0.0, noise, (count, CLASSES))
    logits[np.arange(count), labels] += scale
    return logits, labels


def scipy_temperature(logits, labels):
    rows = np.arange(len(labels))

    def nll(log_temperature):
        return -np.mean(log_softmax(logits / np.exp(log_temperature), axis=1)[rows, labels])

    found = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(found.x))


@pytest.mark.parametrize(
    "count, scale, noise",
    # Over-confident (T > 1), about right, under-confident (T < 1).
    [(500, 8.0, 4.0), (300, 2.0, 1.0), (200, 0.6, 0.2), (50, 3.0, 2.0)],
)
def test_fit_temperature_matches_scipy(count, scale, noise, rng):
    logits, labels = made_up_logits(rng, count, scale, noise)
    expected = scipy_temperature(logits, labels)
    assert fit_temperature(logits, labels) == pytest.approx(expected, rel=1e-5)
    # Probabilities give the same temperature as their logits.
    probs = np.exp(log_softmax(logits, axis=1))
    assert fit_temperature(probs, labels, from_logits=False) == pytest.approx(expected, rel=1e-5)
    # One-hot and (N, 1) labels too.
    onehot = np.eye(CLASSES)[labels]
    assert fit_temperature(logits, onehot) == pytest.approx(expected, rel=1e-5)
    assert fit_temperature(logits, labels[:, None]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "logits, labels, expected",
    [
        # Always right: sharpen to the end of the range.
        (np.array([[3.0, 0.0], [0.0, 3.0]]), [0, 1], 1e-2),
        # Right half the time with the same scores: soften to the other end.
        (np.array([[3.0, 0.0], [3.0, 0.0]]), [0, 1], 1e2),
        # Constant rows: no temperature changes anything.
        (np.zeros((3, 2)), [0, 1, 1], 1.0),
    ],
    ids=["separable", "useless", "constant"],
)
def test_fit_temperature_ends_of_the_range(logits, labels, expected):
    assert fit_temperature(logits, np.array(labels)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "scores, labels, kwargs, error, match",
    [
        (np.zeros((3,)), [0, 1, 0], {}, ValueError, r"`scores` must be an array \(N, K\)"),
        (np.zeros((3, 1)), [0, 0, 0], {}, ValueError, r"K >= 2 classes, got shape \(3, 1\)"),
        (np.full((2, 2), np.nan), [0, 1], {}, ValueError, r"holds 4 NaN or infinite"),
        (np.ones((2, 2)), [0, 1], {"from_logits": False}, ValueError, r"probabilities that sum"),
        (np.ones((2, 2)), [0, 1], {"from_logits": "yes"}, TypeError, r"`from_logits` must be"),
        (np.ones((2, 2)), [0, 2], {}, ValueError, r"`labels`: labels must be integers in \[0, 2\)"),
        (np.ones((2, 2)), [0, 1, 1], {}, ValueError, r"same number of rows, got 2 and 3"),
    ],
    ids=["rank", "one_class", "nan", "not_probs", "flag", "label_range", "lengths"],
)
def test_fit_temperature_errors(scores, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_temperature(scores, np.array(labels), **kwargs)


class TemperatureScalingLayerTest(testing.TestCase):
    """Keras' own layer harness."""

    @parameterized.named_parameters(
        ("probabilities", {"temperature": 2.0}),
        ("logits", {"temperature": 0.5, "from_logits": True}),
    )
    def test_layer(self, init_kwargs):
        self.run_layer_test(
            TemperatureScaling,
            init_kwargs=init_kwargs,
            input_shape=(3, 4),
            expected_output_shape=(3, 4),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            # No weights to train.
            run_training_check=False,
        )


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_layer_computes_softmax_of_scaled_log_probabilities(temperature, from_logits, rng):
    logits = rng.normal(0.0, 3.0, (6, CLASSES)).astype("float32")
    expected = np.exp(log_softmax(logits.astype("float64") / temperature, axis=1))
    inputs = logits if from_logits else np.exp(log_softmax(logits, axis=1)).astype("float32")
    outputs = keras.ops.convert_to_numpy(
        TemperatureScaling(temperature, from_logits=from_logits)(inputs)
    )
    if from_logits:
        np.testing.assert_allclose(outputs, logits / temperature, rtol=1e-6)
        outputs = np.exp(log_softmax(outputs, axis=1))
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, r"`temperature` must be a finite number > 0, got te"),
        ({"temperature": float("inf")}, ValueError, r"`temperature` must be a finite number"),
        ({"temperature": "2"}, TypeError, r"`temperature` .* got '2' of type str"),
        ({"temperature": True}, TypeError, r"`temperature` .* of type bool"),
        ({"temperature": 2.0, "from_logits": 1}, TypeError, r"`from_logits` must be a bool"),
    ],
    ids=["zero", "inf", "str", "bool", "flag"],
)
def test_layer_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TemperatureScaling(**kwargs)


def test_layer_mixed_precision(rng):
    layer = TemperatureScaling(2.0, dtype="mixed_float16")
    probs = np.array([[0.999, 0.001], [0.5, 0.5]], dtype="float16")
    outputs = keras.ops.convert_to_numpy(layer(probs))
    assert outputs.dtype == np.float16
    np.testing.assert_allclose(outputs.sum(1), 1.0, atol=1e-3)
    assert outputs[0, 1] == pytest.approx(np.sqrt(0.001) / (np.sqrt(0.999) + np.sqrt(0.001)), 1e-2)


# ---------------------------------------------------------------------------
# calibrate_temperature on models
# ---------------------------------------------------------------------------


def mlp(activation="softmax", seed=0, scale=1.0):
    """A random MLP; `scale` multiplies the head's logits (over-confidence)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), name="features")
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Dense(CLASSES)(x)
    x = keras.layers.Rescaling(scale)(x)
    if activation:
        x = keras.layers.Activation(activation)(x)
    return keras.Model(inputs, x)


def data(rng, count=60):
    x = rng.normal(size=(count, FEATURES)).astype("float32")
    return x, rng.integers(0, CLASSES, count)


def trained(rng, scale=1.0, activation="softmax"):
    """A classifier fitted to a learnable rule, its logits scaled by `scale` after."""
    x = rng.normal(size=(300, FEATURES)).astype("float32")
    y = np.argmax(x[:, :CLASSES] + rng.normal(0.0, 0.7, (300, CLASSES)), axis=1)
    model = mlp(activation, scale=1.0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=activation is None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x[:200], y[:200], epochs=15, batch_size=50, verbose=0)
    rescale = [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)][0]
    rescale.scale = scale
    return model, (x[200:250], y[200:250]), (x[250:], y[250:])


KINDS = {
    "plain": lambda: mlp(),
    "plain_logits": lambda: mlp(None),
    "agrlearn": lambda: keras_agrlearn.wrap(mlp(), n=2, seed=0),
    "agrlearn_logits": lambda: keras_agrlearn.wrap(mlp(None), n=2, seed=0),
    "ensemble": lambda: [mlp(seed=s) for s in range(3)],
    "ensemble_logits": lambda: [mlp(None, seed=s) for s in range(2)],
}


def _probs(outputs, from_logits):
    outputs = np.asarray(outputs, "float64")
    return np.exp(log_softmax(outputs, axis=1)) if from_logits else outputs


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_calibrated_model_tempers_and_keeps_accuracy(kind, rng, tmp_path):
    model = KINDS[kind]()
    from_logits = kind.endswith("logits")
    x_val, y_val = data(rng)
    x, _ = data(rng, count=40)
    calibrated = calibrate_temperature(model, x_val, y_val, from_logits=from_logits)
    temperature = calibrated.layers[-1].temperature
    models = model if isinstance(model, list) else [model]
    raw = np.mean([_probs(m.predict(x, verbose=0), from_logits) for m in models], axis=0)
    val = np.mean([_probs(m.predict(x_val, verbose=0), from_logits) for m in models], axis=0)
    assert temperature == pytest.approx(fit_temperature(val, y_val, from_logits=False), rel=1e-4)
    tempered_output = calibrated.predict(x, verbose=0)
    tempered = _probs(tempered_output, from_logits and kind != "ensemble_logits")
    expected = np.exp(log_softmax(np.log(raw) / temperature, axis=1))
    np.testing.assert_allclose(tempered, expected, rtol=1e-3, atol=1e-5)
    # Tempering never changes the predicted class.
    np.testing.assert_array_equal(tempered.argmax(1), raw.argmax(1))
    path = tmp_path / "calibrated.keras"
    calibrated.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tempered_output, rtol=1e-5, atol=1e-6)
    assert loaded.layers[-1].temperature == temperature


def test_over_confident_model_gets_a_temperature_above_one(rng):
    model, (x_val, y_val), (x_test, y_test) = trained(rng, scale=4.0)
    calibrated = calibrate_temperature(model, x_val, y_val)
    assert calibrated.layers[-1].temperature > 1.5
    raw = evaluate_uncertainty(model, x_test, y_test)
    tempered = evaluate_uncertainty(calibrated, x_test, y_test)
    assert tempered["accuracy"] == raw["accuracy"]
    assert tempered["nll"] < raw["nll"]


def test_under_confident_model_gets_a_temperature_below_one(rng):
    model, (x_val, y_val), _ = trained(rng, scale=0.2, activation=None)
    calibrated = calibrate_temperature(model, x_val, y_val, from_logits=True)
    assert calibrated.layers[-1].temperature < 1.0


def test_members_of_a_calibrated_agrlearn_model_are_tempered(rng):
    model = keras_agrlearn.wrap(mlp(), n=2, seed=0)
    x_val, y_val = data(rng)
    calibrated = calibrate_temperature(model, x_val, y_val)
    temperature = calibrated.layers[-1].temperature
    raw = keras_agrlearn.members(model).predict(x_val, verbose=0).astype("float64")
    tempered = keras_agrlearn.members(calibrated).predict(x_val, verbose=0)
    expected = np.exp(log_softmax(np.log(raw) / temperature, axis=-1))
    np.testing.assert_allclose(tempered, expected, rtol=1e-3, atol=1e-5)
    scores = evaluate_uncertainty(calibrated, x_val, y_val)
    assert "member_accuracy" in scores


@pytest.mark.parametrize(
    "make, kwargs, error, match",
    [
        (mlp, {"x_val": None}, ValueError, r"`x_val` is None: calibrate_temperature fits"),
        (mlp, {"y_val": None}, ValueError, r"`y_val` is None: calibrate_temperature fits"),
        (mlp, {"y_val": np.zeros(3, int)}, ValueError, r"60 inputs and 3 labels"),
        (mlp, {"x_val": np.zeros((0, FEATURES))}, ValueError, r"`x_val` is empty"),
        (mlp, {"from_logits": True}, ValueError, r"values that all lie in \[0, 1\]"),
        (lambda: mlp("sigmoid"), {}, ValueError, r"does not predict probabilities"),
        (lambda: mlp(None), {}, ValueError, r"pass `from_logits=True`"),
        (lambda: mlp("sigmoid"), {"from_logits": True}, ValueError, r"softmax or sigmoid"),
        (mlp, {"from_logits": 1}, TypeError, r"`from_logits` must be True or False"),
        (mlp, {"y_val": np.full(60, 4)}, ValueError, r"`y_val`: labels must be integers"),
        (lambda: "model", {}, TypeError, r"`model` must be a keras.Model"),
        (
            lambda: keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)]),
            {},
            ValueError,
            r"K >= 2 classes",
        ),
    ],
    ids=[
        "no_x_val",
        "no_y_val",
        "lengths",
        "empty",
        "probabilities_as_logits",
        "sigmoid",
        "logits_as_probabilities",
        "sigmoid_as_logits",
        "flag",
        "label_range",
        "not_a_model",
        "one_unit",
    ],
)
def test_calibrate_temperature_errors(make, kwargs, error, match, rng):
    x_val, y_val = data(rng)
    arguments = {"x_val": x_val, "y_val": y_val, **kwargs}
    with pytest.raises(error, match=match):
        calibrate_temperature(make(), **arguments)


def test_evaluate_uncertainty_reports_tempered_scores_beside_the_raw(rng):
    model, validation, (x_test, y_test) = trained(rng, scale=4.0)
    scores = evaluate_uncertainty(model, x_test, y_test, validation_data=validation)
    tempered = evaluate_uncertainty(calibrate_temperature(model, *validation), x_test, y_test)
    assert scores["temperature"] == pytest.approx(
        calibrate_temperature(model, *validation).layers[-1].temperature, rel=1e-4
    )
    for name in ("nll", "ece", "brier"):
        assert scores[f"tempered_{name}"] == pytest.approx(tempered[name], abs=1e-4)
    assert scores["tempered_nll"] < scores["nll"]
    assert scores["accuracy"] == tempered["accuracy"]


@pytest.mark.parametrize(
    "validation_data, match",
    [
        ((np.zeros((4, FEATURES)),), r"`validation_data` must be a pair"),
        ((np.zeros((4, FEATURES)), np.zeros(3, int)), r"as many labels as inputs, got 4"),
        ((np.zeros((4, FEATURES + 1)), np.zeros(4, int)), r"`validation_data` must have the per"),
        ((np.zeros((4, FEATURES)), np.full(4, 9)), r"`validation_data`: labels must be integers"),
    ],
    ids=["single", "lengths", "shape", "label_range"],
)
def test_evaluate_uncertainty_validation_data_errors(validation_data, match, rng):
    x, y = data(rng)
    with pytest.raises(ValueError, match=match):
        evaluate_uncertainty(mlp(), x, y, validation_data=validation_data)
