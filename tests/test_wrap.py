import keras
import numpy as np
import pytest

import keras_agrlearn
from keras_agrlearn import _defaults
from keras_agrlearn import wrap
from keras_agrlearn._validation import INFERENCE_MODES


def mlp(features=8, classes=3, activation="softmax"):
    inputs = keras.Input((features,))
    x = keras.layers.Dense(32, activation="relu")(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation=activation)(x))


def residual_cnn(classes=3):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(6, 3, padding="same")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Conv2D(5, 1)(x)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def nested_sequential(classes=4):
    return keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            keras.Sequential(
                [keras.layers.Dense(12, activation="relu"), keras.layers.Dense(classes)]
            ),
        ]
    )


def learnable_task(rng, samples=600, features=8, classes=3):
    """Labels are the argmax of the first features: easy, but only if rows stay aligned."""
    x = rng.normal(size=(samples, features)).astype("float32")
    return x, np.argmax(x[:, :classes], axis=1)


def compile_model(model, jit_compile, lr=1e-2):
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.parametrize("backbone", [mlp, residual_cnn, nested_sequential])
def test_n1_width1_is_the_backbone(backbone):
    original = backbone()
    rebuilt = wrap(original, n=1, width=1.0)
    assert rebuilt.count_params() == original.count_params()
    assert tuple(rebuilt.input_shape) == tuple(original.input_shape)
    assert tuple(rebuilt.output_shape) == tuple(original.output_shape)


@pytest.mark.parametrize("width", [1.0, 1.5, 2.0, 0.5])
def test_width_scales_hidden_layers_and_keeps_residuals(width):
    model = wrap(residual_cnn(), n=3, width=width)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [keras_agrlearn.scaled_width(f, width) for f in (6, 6, 5)]
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    assert head.units == 3 * 3
    assert model.output_shape == (None, 3)


def test_structure_preprocessing_stays_per_sample():
    model = wrap(residual_cnn(), n=2)
    names = [type(layer).__name__ for layer in model.layers]
    assert names.index("Rescaling") < names.index("Aggregate") < names.index("Conv2D")
    assert names[-2:] == ["Deaggregate", "Activation"]
    assert "Lambda" not in names


@pytest.mark.parametrize("inference", INFERENCE_MODES)
def test_labels_stay_aligned(inference, jit_compile, rng):
    x, y = learnable_task(rng, samples=1000)
    model = compile_model(wrap(mlp(), n=2, width=1.5, inference=inference), jit_compile)
    # batch 25 is odd: every step has a partial group. Chance level is 1/3.
    model.fit(x[:800], y[:800], batch_size=25, epochs=6, verbose=0)
    _, accuracy = model.evaluate(x[800:], y[800:], batch_size=25, verbose=0)
    assert accuracy > 0.8


def test_shuffle_option_keeps_labels_aligned(jit_compile, rng):
    x, y = learnable_task(rng, samples=1000)
    model = compile_model(wrap(mlp(), n=2, shuffle=True, seed=1), jit_compile)
    model.fit(x[:800], y[:800], batch_size=25, epochs=6, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(x[800:], y[800:], verbose=0)
    assert accuracy > 0.8


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 64])
def test_non_divisible_batches_fit_evaluate_predict(batch_size, jit_compile, rng):
    x = rng.normal(size=(23, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=23)
    for inference in ("replicate", "group"):
        model = compile_model(wrap(residual_cnn(), n=3, inference=inference), jit_compile)
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        loss, _ = model.evaluate(x, y, batch_size=batch_size, verbose=0)
        assert np.isfinite(loss)
        probs = model.predict(x, batch_size=batch_size, verbose=0)
        assert probs.shape == (23, 3)
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_replicate_prediction_depends_on_the_sample_alone(rng):
    model = wrap(residual_cnn(), n=3, width=1.5)
    x = rng.normal(size=(20, 8, 8, 1)).astype("float32") * 100
    reference = model.predict(x, batch_size=20, verbose=0)
    for batch_size in (1, 4, 7):
        np.testing.assert_allclose(
            model.predict(x, batch_size=batch_size, verbose=0), reference, atol=1e-5
        )
    companions = np.concatenate([x[:5], rng.normal(size=(6, 8, 8, 1)).astype("float32")])
    np.testing.assert_allclose(model.predict(companions, verbose=0)[:5], reference[:5], atol=1e-5)


def test_group_prediction_keeps_row_order(rng):
    """Group inference of an identity-like model returns each sample's own scores."""
    inputs = keras.Input((4,))
    backbone = keras.Model(inputs, keras.layers.Dense(4, name="head")(inputs))
    model = wrap(backbone, n=2, inference="group")
    head = model.get_layer("head_slots")
    # slot s of the 8 inputs feeds slot s of the 8 outputs: a block-diagonal identity.
    head.set_weights([np.eye(8, dtype="float32"), np.zeros(8, "float32")])
    x = rng.normal(size=(7, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, batch_size=3, verbose=0), x, atol=1e-6)


def test_logits_head_stays_logits(rng):
    model = wrap(mlp(activation=None), n=2)
    assert not isinstance(model.layers[-1], keras.layers.Activation)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = learnable_task(rng, samples=40)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (40, 3)


def test_nested_models_are_rebuilt(rng):
    model = wrap(nested_sequential(), n=2, width=2)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [32, 24, 8]
    assert model.predict(rng.normal(size=(5, 10)), verbose=0).shape == (5, 4)


def test_backbone_is_left_untouched(rng):
    backbone = mlp()
    weights = [w.copy() for w in backbone.get_weights()]
    model = compile_model(wrap(backbone, n=2), jit_compile=False)
    x, y = learnable_task(rng, samples=64)
    model.fit(x, y, epochs=1, verbose=0)
    for before, after in zip(weights, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_normalization_state_is_kept(rng):
    x = rng.normal(loc=5.0, scale=3.0, size=(64, 6)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(norm(inputs))
    backbone = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model = wrap(backbone, n=2)
    kept = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    assert kept and [layer for layer in model.layers].index(kept[0]) < [
        type(layer).__name__ for layer in model.layers
    ].index("Aggregate")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kept[0](x)).mean(axis=0), 0.0, atol=1e-4)


@pytest.mark.parametrize("inference", ["replicate", "group"])
def test_save_and_load(inference, tmp_path, rng):
    model = compile_model(wrap(residual_cnn(), n=3, width=1.5, inference=inference), False)
    x = rng.normal(size=(10, 8, 8, 1)).astype("float32")
    model.fit(x, rng.integers(0, 3, 10), epochs=1, verbose=0)
    path = tmp_path / "agr.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_input_pipelines(rng):
    x, y = learnable_task(rng, samples=50)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return x[index * 13 : (index + 1) * 13], y[index * 13 : (index + 1) * 13]

    model = compile_model(wrap(mlp(), n=3), jit_compile=False)
    model.fit(Batches(), epochs=1, verbose=0)
    assert model.predict(Batches(), verbose=0).shape == (50, 3)
    if keras.backend.backend() == "torch":
        import torch

        data = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
        loader = torch.utils.data.DataLoader(data, batch_size=11)
        model.fit(loader, epochs=1, verbose=0)
    else:
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(11)
        model.fit(dataset, epochs=1, verbose=0)
        assert model.predict(dataset, verbose=0).shape == (50, 3)


class _Classifier(keras.Model):
    """A subclassed classifier with its own head and a `keras.ops` call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.scores = keras.layers.Dense(3)

    def call(self, inputs):
        return keras.ops.softmax(self.scores(self.hidden(inputs)))


def test_subclassed_classifier_is_traced_and_rebuilt_widened(rng, capsys):
    backbone = _Classifier(name="classifier")
    backbone(np.zeros((1, 4), "float32"))
    model = wrap(backbone, n=2, width=2.0, verbose=True)
    assert "strategy='rebuild'" in capsys.readouterr().out
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [16, 2 * 3]
    assert all(layer is not backbone.hidden for layer in dense)
    model = compile_model(model, jit_compile=False)
    x = rng.normal(size=(10, 4)).astype("float32")
    model.fit(x, rng.integers(0, 3, 10), batch_size=4, epochs=1, verbose=0)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (10, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_untraceable_subclassed_model_falls_back_to_the_stem_saying_why(capsys):
    class Untraceable(_Classifier):
        def call(self, inputs):
            if isinstance(inputs, keras.KerasTensor):
                raise TypeError("needs concrete tensors")
            return super().call(inputs)

    backbone = Untraceable(name="untraceable")
    backbone(np.zeros((1, 4), "float32"))
    wrap(backbone, n=2, classes=3, verbose=True)
    out = capsys.readouterr().out
    assert "strategy='stem'" in out and "`classes=` asks for a new head" in out
    with pytest.raises(
        ValueError,
        match=r"cannot be traced on a symbolic input \(TypeError: needs concrete tensors\)",
    ):
        wrap(backbone, n=2)


def test_defaults_are_settled_before_building(capsys):
    # One build: the aggregation points are found first, so the model with two
    # inputs gets the one-grouping defaults directly, and says so.
    a, b = keras.Input((3,)), keras.Input((3,))
    two_inputs = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    before = keras.backend.get_uid("aggregate")
    wrap(two_inputs, n=2, verbose=True)
    assert keras.backend.get_uid("aggregate") == before + 2
    assert "repetition=0.0, batch_repetition=1" in capsys.readouterr().out


def _two_heads(structure):
    """Outputs `a` (softmax) and `b` (logits) as one tensor, a list or a dict."""
    inputs = keras.Input((6,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    a = keras.layers.Dense(3, activation="softmax", name="a")(x)
    b = keras.layers.Dense(2, name="b")(x)
    outputs = {"single": a, "list": [a, b], "dict": {"a": a, "b": b}}[structure]
    return keras.Model(inputs, outputs)


def _compile_by_output_name(model, jit_compile):
    names = model.output_names
    losses = {
        "a": "sparse_categorical_crossentropy",
        "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
    model.compile(
        optimizer="adam",
        loss={name: losses[name] for name in names},
        metrics={name: ["accuracy"] for name in names},
        loss_weights={name: weight for name, weight in zip(names, (1.0, 0.5))},
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.parametrize("structure", ["single", "list", "dict"])
def test_output_names_and_structure_are_kept(structure, rng, jit_compile):
    backbone = _two_heads(structure)
    model = wrap(backbone, n=2)
    assert model.output_names == backbone.output_names
    assert [t.name for t in model.inputs] == [t.name for t in backbone.inputs] == ["features"]
    # The n * K layer gets a derived name; the per-sample output keeps the head's.
    assert model.get_layer("a_slots").units == 2 * 3
    x = rng.random((8, 6)).astype("float32")
    labels = {"a": rng.integers(0, 3, 8), "b": rng.integers(0, 2, 8)}
    y = {"single": labels["a"], "list": [labels["a"], labels["b"]], "dict": labels}[structure]
    for candidate in (backbone, model):
        _compile_by_output_name(candidate, jit_compile)
        history = candidate.fit(x, y, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    predicted, expected = model.predict(x, verbose=0), backbone.predict(x, verbose=0)
    assert type(predicted) is type(expected)
    assert keras.tree.map_structure(np.shape, predicted) == keras.tree.map_structure(
        np.shape, expected
    )


@pytest.mark.parametrize("strategy", ["rebuild", "stem"])
@pytest.mark.parametrize("kind", ["sequential", "named-input", "nested-output"])
def test_input_and_output_names_are_kept(kind, strategy):
    if kind == "named-input":
        inputs = keras.Input((6,), name="pixels")
        backbone = keras.Model(inputs, keras.layers.Dense(3, name="scores")(inputs))
        input_name = "pixels"
    else:
        if kind == "sequential":
            backbone = keras.Sequential(
                [keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(3, name="scores")]
            )
        else:
            backbone = nested_sequential()
        # An unnamed input is named after its input layer, as in the summary.
        input_name = backbone.get_config()["layers"][0]["config"]["name"]
        assert input_name.startswith("input_layer")
    model = wrap(backbone, n=2, strategy=strategy)
    # Keras names an output after the layer that produces it: for the nested
    # model, the inner Sequential.
    assert model.output_names == [backbone.layers[-1].name]
    assert [t.name for t in model.inputs] == [input_name]


@pytest.mark.parametrize("strategy", ["rebuild", "stem"])
def test_an_agrlearn_model_is_not_wrapped_again(strategy):
    model = wrap(mlp(), n=2, strategy=strategy)
    with pytest.raises(
        ValueError,
        match=(
            r"Argument `model`: model 'agrlearn_.*' is already an AgrLearn model \(it holds "
            r"'aggregate.*' \(Aggregate\)"
        ),
    ):
        wrap(model, n=2)


def test_an_agrlearn_model_inside_a_model_is_not_wrapped_again():
    inner = wrap(mlp(), n=2)
    inputs = keras.Input((8,))
    outer = keras.Model(inputs, inner(inputs), name="outer")
    with pytest.raises(ValueError, match=r"model 'outer' is already an AgrLearn model"):
        wrap(outer, n=2)


@pytest.mark.parametrize("positional", [(3, 1.5), (3, None, "group")], ids=["width", "inference"])
def test_arguments_after_n_are_keyword_only(positional):
    with pytest.raises(TypeError, match="positional argument"):
        wrap(mlp(), *positional)


@pytest.mark.keep_session
@pytest.mark.parametrize(
    "setting, expected",
    [
        ("n", _defaults.N),
        ("inference", _defaults.INFERENCE),
        ("repetition", _defaults.REPETITION),
        ("batch_repetition", _defaults.BATCH_REPETITION),
        ("width", _defaults.WIDTH),
        ("objective", _defaults.OBJECTIVE),
    ],
)
def test_defaults_come_from_the_defaults_module(setting, expected):
    model = wrap(mlp())
    aggregate = next(layer for layer in model.layers if isinstance(layer, keras_agrlearn.Aggregate))
    deaggregate = next(
        layer for layer in model.layers if isinstance(layer, keras_agrlearn.Deaggregate)
    )
    hidden = model.layers[model.layers.index(aggregate) + 1]
    found = {
        "n": aggregate.n,
        "inference": aggregate.inference,
        "repetition": aggregate.repetition,
        "batch_repetition": aggregate.batch_repetition,
        "width": hidden.units,
        "objective": deaggregate.objective,
    }[setting]
    if setting == "width":
        expected = keras_agrlearn.scaled_width(32, expected)
    assert found == expected
