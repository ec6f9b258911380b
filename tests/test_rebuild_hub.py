"""`wrap` on a keras-hub image classifier built from a config (no download).

keras-hub's `ImageClassifier` tasks are Functional models, so `wrap` rebuilds
them layer by layer like any other; their head returns logits by default,
and the wrapped head does too.
"""

import keras
import numpy as np
import pytest

from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

keras_hub = pytest.importorskip("keras_hub")

CLASSES = 3


def resnet_classifier():
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def test_keras_hub_classifier_wraps_trains_and_predicts_per_sample(rng, capsys):
    classifier = resnet_classifier()
    model = wrap(classifier, n=2, width=0.5, verbose=True)
    assert "strategy='rebuild'" in capsys.readouterr().out
    assert sum(isinstance(layer, Deaggregate) for layer in model.layers) == 1
    assert model.output_shape == classifier.output_shape == (None, CLASSES)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=keras.backend.backend() != "jax",
    )
    x = (rng.random((4, 32, 32, 3)) * 255).astype("float32")
    y = np.array([0, 1, 2, 0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logits = model.predict(x, batch_size=4, verbose=0)
    assert logits.shape == (4, CLASSES) and np.all(np.isfinite(logits))
    # A logits head stays a logits head: rows are not probabilities.
    assert not np.allclose(logits.sum(-1), 1.0)
    reordered = model.predict(x[::-1], batch_size=4, verbose=0)
    np.testing.assert_allclose(reordered[::-1], logits, rtol=1e-4, atol=1e-4)


# A keras-hub classifier saved as a preset and wrapped with the stem strategy:
# the pretrained body is kept, weights included. The ResNet is as small as
# keras-hub allows (its first stack must have 64 filters) on 16x16 images.


def tiny_resnet_classifier(num_classes=CLASSES):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(16, 16, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=num_classes)


def backbone_arrays(backbone):
    """Every weight of a keras-hub backbone, BatchNorm statistics included, by layer."""
    return {
        (layer.name, index): keras.ops.convert_to_numpy(weight).copy()
        for layer in backbone.layers
        for index, weight in enumerate(layer.weights)
    }


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A preset directory and its backbone weights as saved.

    Every weight is moved away from its initial value, so a weight that was
    re-initialised or not loaded cannot pass for a kept one.
    """
    keras.utils.set_random_seed(0)
    classifier = tiny_resnet_classifier()
    rng = np.random.default_rng(1)
    for weight in classifier.weights:
        noise = rng.normal(0.0, 0.05, weight.shape).astype(weight.dtype)
        weight.assign(keras.ops.convert_to_numpy(weight) + noise)
    directory = str(tmp_path_factory.mktemp("presets") / "tiny_resnet")
    classifier.save_to_preset(directory)
    return directory, backbone_arrays(classifier.backbone)


def images(rng, count=8):
    x = rng.random((count, 16, 16, 3)).astype("float32")
    # A learnable label: the brightest of three image bands.
    y = np.argmax(x.reshape(count, 3, -1).mean(-1), axis=-1).astype("int32")
    return x, y


def compiled(model, optimizer="sgd"):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1) if optimizer == "sgd" else optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_preset_backbone_weights_are_kept_bit_for_bit(preset):
    directory, saved = preset
    classifier = keras_hub.models.ImageClassifier.from_preset(directory)
    model = wrap(classifier, n=2, strategy="stem")
    loaded = backbone_arrays(keras_hub.models.Backbone.from_preset(directory))
    assert loaded.keys() == saved.keys() and len(saved) == len(classifier.backbone.weights)
    for (layer_name, index), array in saved.items():
        kept = keras.ops.convert_to_numpy(model.get_layer(layer_name).weights[index])
        assert kept.dtype == array.dtype == loaded[layer_name, index].dtype
        assert kept.shape == array.shape
        assert kept.tobytes() == array.tobytes() == loaded[layer_name, index].tobytes()
    # The body's variables are the loaded classifier's own (shared, not
    # copied); everything else is the stem projection and the new head.
    body = {id(weight) for weight in classifier.backbone.weights}
    assert body <= {id(weight) for weight in model.weights}
    others = {weight.path.split("/")[0] for weight in model.weights if id(weight) not in body}
    assert others == {"agrlearn_stem", "predictions_slots"}
    assert model.output_names == ["predictions"]


def test_freezing_the_whole_classifier_before_wrapping_leaves_stem_and_head(preset):
    classifier = keras_hub.models.ImageClassifier.from_preset(preset[0])
    classifier.trainable = False
    model = wrap(classifier, n=2, strategy="stem")
    trainable = {weight.path for weight in model.trainable_weights}
    assert trainable == {
        "agrlearn_stem/kernel",
        "predictions_slots/kernel",
        "predictions_slots/bias",
    }
    model.trainable = False
    assert not model.trainable_weights


def changed(before, weights):
    return [
        not np.array_equal(old, keras.ops.convert_to_numpy(weight))
        for old, weight in zip(before, weights)
    ]


def fit_and_compare(model, body, new, x, y):
    """Fits one epoch; which body weights and which new weights changed."""
    body_before = [keras.ops.convert_to_numpy(w).copy() for w in body]
    new_before = [keras.ops.convert_to_numpy(w).copy() for w in new]
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    return changed(body_before, body), changed(new_before, new)


@pytest.mark.parametrize("freeze", ["before_wrap", "after_wrap"])
def test_frozen_body_stays_unfrozen_body_trains(preset, rng, freeze):
    classifier = keras_hub.models.ImageClassifier.from_preset(preset[0])
    x, y = images(rng)
    if freeze == "before_wrap":
        classifier.backbone.trainable = False
    model = wrap(classifier, n=2, strategy="stem")
    # All of the body's weights: kernels and BatchNorm statistics, which a
    # frozen BatchNormalization layer neither learns nor updates.
    body = classifier.backbone.weights
    new = [model.get_layer("agrlearn_stem").kernel, *model.get_layer("predictions_slots").weights]
    if freeze == "after_wrap":
        compiled(model)
        body_changed, new_changed = fit_and_compare(model, body, new, x, y)
        assert all(body_changed) and all(new_changed)
        # The wrapped model shares the backbone's layers, so setting
        # `trainable` on the backbone freezes them in the wrapped model; the
        # change takes effect at the next compile.
        classifier.backbone.trainable = False
    compiled(model)
    assert len(model.trainable_weights) == len(new)
    body_changed, new_changed = fit_and_compare(model, body, new, x, y)
    assert not any(body_changed) and all(new_changed)

    classifier.backbone.trainable = True
    compiled(model)
    body_changed, new_changed = fit_and_compare(model, body, new, x, y)
    assert all(body_changed) and all(new_changed)


def test_fine_tuning_a_preset_learns_and_predicts_per_sample(preset, rng):
    classifier = keras_hub.models.ImageClassifier.from_preset(preset[0], num_classes=CLASSES)
    model = compiled(wrap(classifier, n=2, strategy="stem"), keras.optimizers.Adam(1e-2))
    x, y = images(rng)
    history = model.fit(x, y, batch_size=len(x), epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    logits = model.predict(x, batch_size=len(x), verbose=0)
    assert logits.shape == (len(x), CLASSES) and np.all(np.isfinite(logits))
    reordered = model.predict(x[::-1], batch_size=len(x), verbose=0)
    np.testing.assert_allclose(reordered[::-1], logits, rtol=1e-4, atol=1e-4)
