"""wrap(mixing=...): per-slot encoders mixed in training (MixMo), on every backbone kind."""

import dataclasses
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND

import keras_agrlearn
from keras_agrlearn import MixedEncoders
from keras_agrlearn import MixingDecay
from keras_agrlearn import wrap
from keras_agrlearn._deaggregate import Deaggregate
from keras_agrlearn._flops import forward_flops
from keras_agrlearn._flops import model_passes_per_epoch
from keras_agrlearn._settings import Settings


def _dense():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="dense",
    )


def _conv1d():
    return keras.Sequential(
        [
            keras.Input((10, 2)),
            keras.layers.Conv1D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="conv1d",
    )


def _conv2d():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet")


def _conv3d():
    return keras.Sequential(
        [
            keras.Input((4, 4, 4, 1)),
            keras.layers.Conv3D(3, 2, activation="relu"),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="conv3d",
    )


def _text_conv():
    return keras.Sequential(
        [
            keras.Input((9,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.Conv1D(5, 3, activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="text_conv",
    )


def _text_dense():
    return keras.Sequential(
        [
            keras.Input((9,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="text_dense",
    )


BACKBONES = {
    "dense": _dense,
    "conv1d": _conv1d,
    "conv2d": _conv2d,
    "conv3d": _conv3d,
    "text_conv": _text_conv,
    "text_dense": _text_dense,
}


def _inputs(model, rows=12, seed=0):
    rng = np.random.default_rng(seed)
    shape = (rows,) + tuple(model.input_shape[1:])
    if model.name.startswith("text"):
        return rng.integers(1, 20, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _pretend_pretrained(model, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = rng.normal(size=tuple(weight.shape)).astype("float32")
        if "variance" in weight.name:
            value = np.abs(value) + 0.5
        values.append(value)
    model.set_weights(values)
    return model


def _mixed_layers(model):
    return [layer for layer in model.layers if isinstance(layer, MixedEncoders)]


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("mixing", ["cut", "linear"])
def test_width_one_predicts_as_the_pretrained_backbone(kind, mixing):
    """Each encoder starts from the pretrained kernel / n: replicate inference is the backbone."""
    backbone = _pretend_pretrained(BACKBONES[kind]())
    x = _inputs(backbone)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = wrap(backbone, n=2, mixing=mixing)
    assert not [w for w in record if "looks pretrained" in str(w.message)]
    (mixed,) = _mixed_layers(model)
    kernel = keras.ops.convert_to_numpy(mixed.encoders[0].kernel)
    original = keras.ops.convert_to_numpy(backbone.get_layer(mixed.name).kernel)
    np.testing.assert_allclose(kernel, original / 2, rtol=1e-6)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), backbone.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("inference", ["replicate", "group", "contextual"])
@pytest.mark.parametrize("kind", ["conv2d", "text_conv"])
def test_inference_is_the_summed_model(kind, inference):
    """Outside training a mixing model is the mixing="sum" model with the same weights."""
    backbone = BACKBONES[kind]()
    x = _inputs(backbone, rows=11)
    summed = wrap(backbone, n=2, inference=inference, seed=3)
    mixed = wrap(backbone, n=2, inference=inference, mixing="cut", seed=3)
    # Give the mixing model random weights, then the summed model its twin.
    _pretend_pretrained(mixed, seed=4)
    (layer,) = _mixed_layers(mixed)
    values = {}
    for original in mixed.layers:
        if original is layer:
            kernels = [keras.ops.convert_to_numpy(e.kernel) for e in layer.encoders]
            values[original.name] = [np.concatenate(kernels, axis=-2)] + (
                [keras.ops.convert_to_numpy(layer.bias)] if layer.bias is not None else []
            )
        elif original.weights:
            values[original.name] = [keras.ops.convert_to_numpy(w) for w in original.weights]
    for target in summed.layers:
        if target.name in values:
            target.set_weights(values[target.name])
    np.testing.assert_allclose(
        mixed.predict(x, batch_size=11, verbose=0),
        summed.predict(x, batch_size=11, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_sum_is_the_model_of_before():
    """mixing="sum" (the default) builds today's model: no MixedEncoders, the same graph."""
    backbone = _conv2d()
    x = _inputs(backbone)
    keras.utils.set_random_seed(1)
    default = wrap(backbone, n=2, seed=1)
    keras.utils.set_random_seed(1)
    summed = wrap(backbone, n=2, mixing="sum", seed=1)
    assert not _mixed_layers(summed)
    assert [type(layer) for layer in summed.layers] == [type(layer) for layer in default.layers]
    assert summed.settings == default.settings
    summed.set_weights(default.get_weights())
    np.testing.assert_array_equal(summed.predict(x, verbose=0), default.predict(x, verbose=0))


@pytest.mark.parametrize("strategy", ["rebuild", "stem"])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("mixing", ["cut", "linear"])
def test_fits_with_sample_weights(mixing, n, strategy, jit_compile):
    backbone = _conv2d()
    x, y = _inputs(backbone, rows=24), np.arange(24) % 3
    model = wrap(backbone, n=n, mixing=mixing, objective="slots", strategy=strategy, seed=0)
    assert len(_mixed_layers(model)) == 1
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    weights = np.where(np.arange(24) < 12, 1.0, 0.5).astype("float32")
    history = model.fit(x, y, sample_weight=weights, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x, verbose=0).shape == (24, 3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's graph and eager modes")
@pytest.mark.parametrize("run_eagerly", [False, True])
def test_tensorflow_graph_and_eager(run_eagerly):
    backbone = _conv1d()
    x, y = _inputs(backbone, rows=16), np.arange(16) % 3
    model = wrap(backbone, n=2, mixing="cut", objective="slots", seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=run_eagerly)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def _cross_entropy(y, probs):
    return -np.log(np.take_along_axis(probs, y[:, None], axis=1)[:, 0])


@pytest.mark.parametrize("repetition", [0.0, 0.5])
@pytest.mark.parametrize("sample_weighted", [False, True])
def test_slot_losses_are_weighted_by_their_share(repetition, sample_weighted):
    """objective="slots": each slot's loss times w(kappa), times the sample weight."""
    backbone = _conv1d()
    x, y = _inputs(backbone, rows=10), (np.arange(10) % 3).astype("int32")
    model = wrap(
        backbone,
        n=2,
        mixing="cut",
        objective="slots",
        repetition=repetition,
        seed=2,
        inference="group",
    )
    model.compile(loss="sparse_categorical_crossentropy")
    sample_weight = np.linspace(0.0, 2.0, 10).astype("float32") if sample_weighted else None
    y_pred = model(x, training=True)
    (deaggregate,) = [layer for layer in model.layers if isinstance(layer, Deaggregate)]
    row_weights = keras.ops.convert_to_numpy(deaggregate.loss_weights)
    loss = model.compute_loss(
        x=x,
        y=keras.ops.convert_to_tensor(y),
        y_pred=y_pred,
        sample_weight=None if sample_weight is None else keras.ops.convert_to_tensor(sample_weight),
    )
    probs = keras.ops.convert_to_numpy(y_pred)
    slots = probs.shape[1] if probs.ndim == 3 else 1
    rows = probs.reshape(-1, 3)
    labels = np.repeat(y, slots)
    per_row = _cross_entropy(labels, rows) * row_weights
    if sample_weight is not None:
        per_row = per_row * np.repeat(sample_weight, slots)
    assert row_weights.shape == (10 * slots,)
    assert not np.allclose(row_weights, 1.0)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), per_row.mean(), rtol=1e-4)
    # Outside training the weights are gone.
    model(x, training=False)
    assert deaggregate.loss_weights is None


def test_mean_objective_leaves_the_loss_unweighted():
    backbone = _conv1d()
    x = _inputs(backbone, rows=8)
    model = wrap(backbone, n=2, mixing="cut", objective="mean", seed=0)
    model(x, training=True)
    (deaggregate,) = [layer for layer in model.layers if isinstance(layer, Deaggregate)]
    assert deaggregate.loss_weights is None


def test_flops_count_the_per_slot_encoders():
    """Mixing costs the FLOPs of the layer over n*C channels it replaces."""
    for kind in ("conv2d", "dense", "text_conv"):
        backbone = BACKBONES[kind]()
        for n in (2, 3):
            summed = forward_flops(wrap(backbone, n=n))
            assert forward_flops(wrap(backbone, n=n, mixing="cut")) == summed
    model = wrap(_conv2d(), n=2, mixing="cut", repetition=0.0, batch_repetition=2)
    assert model_passes_per_epoch(model, 100, 10) == 100
    assert model_passes_per_epoch(_conv2d(), 100, 10) == 100
    stem = forward_flops(wrap(_conv2d(), n=2, strategy="stem"))
    assert forward_flops(wrap(_conv2d(), n=2, strategy="stem", mixing="cut")) == stem


def test_settings_are_one_frozen_object_saved_with_the_model(tmp_path):
    backbone = _conv1d()
    model = wrap(backbone, n=2, mixing="linear", mixing_alpha=1.0, mixing_root=2.0, seed=4)
    settings = model.settings
    assert isinstance(settings, Settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n = 3
    assert (settings.n, settings.mixing, settings.mixing_alpha, settings.mixing_root) == (
        2,
        "linear",
        1.0,
        2.0,
    )
    assert settings.repetition == 0.5 and settings.batch_repetition == 1 and settings.seed == 4
    (aggregate,) = [layer for layer in model.layers if isinstance(layer, keras_agrlearn.Aggregate)]
    assert {k: getattr(aggregate, k) for k in settings.aggregate_options()} == (
        settings.aggregate_options()
    )
    (mixed,) = _mixed_layers(model)
    assert (mixed.alpha, mixed.root, mixed.mixing) == (1.0, 2.0, "linear")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.settings == settings
    x = _inputs(backbone)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mixing": "mix"}, ValueError, "mixing"),
        ({"mixing": "cut", "mixing_alpha": 0}, ValueError, "mixing_alpha"),
        ({"mixing": "cut", "mixing_prob": 2.0}, ValueError, "mixing_prob"),
        ({"mixing": "cut", "mixing_root": "3"}, TypeError, "mixing_root"),
    ],
)
def test_invalid_mixing_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wrap(_dense(), n=2, **kwargs)


def test_a_head_right_after_the_aggregation_point_is_refused():
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="mixing='cut'.*head"):
        wrap(backbone, n=2, mixing="cut")
    assert not _mixed_layers(wrap(backbone, n=1, mixing="cut"))


def test_a_first_layer_that_is_no_encoder_is_refused():
    backbone = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(4),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    with pytest.raises(ValueError, match="'norm'.*BatchNormalization"):
        wrap(backbone, n=2, mixing="cut")
    model = wrap(backbone, n=2, mixing="cut", aggregate_after="norm")
    assert len(_mixed_layers(model)) == 1


def test_decay_lowers_the_cut_probability_over_the_last_share():
    decay = MixingDecay()
    factors = [decay.factor(e, 24) for e in (0, 21, 22, 23)]
    assert factors == pytest.approx([1.0, 1.0, 0.75, 0.25])
    backbone = _conv1d()
    x, y = _inputs(backbone, rows=8), np.arange(8) % 3
    model = wrap(backbone, n=2, mixing="cut", mixing_prob=0.4, objective="slots")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[MixingDecay(fraction=0.5)])
    (mixed,) = _mixed_layers(model)
    assert float(keras.ops.convert_to_numpy(mixed.mixing_prob)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="fraction"):
        MixingDecay(fraction=1.5)


def test_hypermodel_searches_mixing():
    keras_tuner = pytest.importorskip("keras_tuner")
    from keras_agrlearn.tuning import AgrLearnHyperModel

    hypermodel = AgrLearnHyperModel(_dense, n=2, width=1.0, mixing=("sum", "cut"))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.get("mixing") == "sum" and not _mixed_layers(model)
    hp.values["mixing"] = "cut"
    assert len(_mixed_layers(hypermodel.build(hp))) == 1
    with pytest.raises(ValueError, match="mixing"):
        AgrLearnHyperModel(_dense, mixing="blend")
