"""MixedEncoders: n per-slot encoders, summed at inference, mixed in training."""

import keras
import numpy as np
import pytest
from keras.src import testing

from keras_agrlearn import MixedEncoders


class MixedEncodersLayerTest(testing.TestCase):
    @pytest.mark.filterwarnings("ignore::UserWarning")
    def test_layer(self):
        cases = [
            (keras.layers.Dense(4, activation="relu"), 2, (5, 6), (5, 4)),
            (keras.layers.Dense(3), 3, (2, 7, 9), (2, 7, 3)),
            (keras.layers.Conv1D(3, 3, padding="same"), 2, (3, 8, 4), (3, 8, 3)),
            (keras.layers.Conv2D(5, 3), 2, (2, 6, 6, 2), (2, 4, 4, 5)),
            (keras.layers.Conv3D(2, 2, use_bias=False), 2, (2, 3, 3, 3, 2), (2, 2, 2, 2, 2)),
        ]
        for template, n, input_shape, expected in cases:
            use_bias = template.get_config()["use_bias"]
            for mixing in ("cut", "linear"):
                self.run_layer_test(
                    MixedEncoders,
                    init_kwargs={"layer": template, "n": n, "mixing": mixing, "seed": 3},
                    input_shape=input_shape,
                    call_kwargs={"training": True},
                    expected_output_shape=expected,
                    expected_num_trainable_weights=n + int(use_bias),
                    expected_num_non_trainable_weights=1,
                    expected_num_seed_generators=1,
                )


def _concatenated_twin(layer, template, x):
    """The one layer over n*C channels with the encoders' kernels stacked."""
    twin = type(template).from_config({**template.get_config(), "name": "twin"})
    twin(x)
    values = [np.concatenate([keras.ops.convert_to_numpy(e.kernel) for e in layer.encoders], -2)]
    if layer.bias is not None:
        values.append(keras.ops.convert_to_numpy(layer.bias))
    twin.set_weights(values)
    return twin


@pytest.mark.parametrize("mixing", ["sum", "cut", "linear"])
@pytest.mark.parametrize(
    "template, shape",
    [
        (keras.layers.Dense(4, activation="relu", bias_initializer="ones"), (6, 3)),
        (keras.layers.Conv1D(4, 3, strides=2, activation="tanh"), (6, 9, 3)),
        (keras.layers.Conv2D(4, 3, padding="same", bias_initializer="ones"), (6, 5, 5, 3)),
        (keras.layers.Conv2D(4, 3, data_format="channels_first"), (6, 3, 5, 5)),
    ],
    ids=["dense", "conv1d", "conv2d", "conv2d-channels-first"],
)
def test_inference_is_the_layer_over_the_concatenated_slots(mixing, template, shape, rng):
    """Summed encoders are exactly one layer over n*C channels (MIMO, AgrLearn)."""
    n = 2
    axis = 1 if template.get_config().get("data_format") == "channels_first" else -1
    full = list(shape)
    full[axis] = n * shape[axis]
    x = rng.normal(size=full).astype("float32")
    layer = MixedEncoders(template, n, axis=axis, mixing=mixing, seed=0)
    got = keras.ops.convert_to_numpy(layer(x))
    twin = _concatenated_twin(layer, template, x)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(twin(x)), rtol=1e-5, atol=1e-5)
    if mixing == "sum":
        trained = keras.ops.convert_to_numpy(layer(x, training=True))
        np.testing.assert_allclose(trained, got, rtol=1e-6, atol=1e-6)


def _slot0_share(layer, groups, positions_shape, channels=1):
    """Per group: the share of positions slot 0 fills, read from the mix."""
    n = layer.n
    ones = np.ones((groups, *positions_shape, channels), "float32")
    zeros = np.zeros_like(ones)
    x = np.concatenate([ones] + [zeros] * (n - 1), axis=-1)
    layer.build(x.shape)
    for encoder in layer.encoders:
        encoder.kernel.assign(np.ones(encoder.kernel.shape, "float32"))
    mixed, weights = layer(x, training=True, return_slot_weights=True)
    mixed = keras.ops.convert_to_numpy(mixed)
    # Slot 0's features are 1, the others' 0: the mix is n * (its share).
    return mixed.reshape(groups, -1).mean(axis=1) / n, keras.ops.convert_to_numpy(weights), mixed


@pytest.mark.parametrize("alpha", [2.0, 0.5])
@pytest.mark.parametrize(
    "template, positions",
    [
        (keras.layers.Dense(1, use_bias=False), ()),
        (keras.layers.Dense(1, use_bias=False), (30,)),
        (keras.layers.Conv1D(1, 1, use_bias=False), (40,)),
        (keras.layers.Conv2D(1, 1, use_bias=False), (12, 12)),
    ],
    ids=["dense-units", "dense-time", "conv1d", "conv2d"],
)
@pytest.mark.parametrize("mixing", ["cut", "linear"])
def test_slot_share_follows_beta(mixing, template, positions, alpha):
    """With a fixed seed, the share of slot 0 in the mix has Beta(alpha, alpha)'s moments."""
    if not positions:
        # A Dense on flat features is cut along its units.
        template = keras.layers.Dense(24, use_bias=False)
    layer = MixedEncoders(template, 2, mixing=mixing, alpha=alpha, prob=1.0, seed=11)
    share, weights, mixed = _slot0_share(layer, 4000, positions)
    mean, variance = 0.5, 1.0 / (4 * (2 * alpha + 1))
    assert abs(share.mean() - mean) < 0.02
    # Rounding each cut to whole positions adds a little variance.
    assert abs(share.var() - variance) < 0.15 * variance + 0.005
    if mixing == "cut":
        # Binary masks: every position holds one slot's features only.
        assert set(np.unique(np.round(mixed, 5))) <= {0.0, 2.0}
    r = 3.0
    expected = 2 * share ** (1 / r) / (share ** (1 / r) + (1 - share) ** (1 / r))
    # Away from 0 and 1, where the share read back from the mix (float32) is
    # too coarse for the root.
    inner = (share > 0.01) & (share < 0.99)
    np.testing.assert_allclose(weights[inner, 0], expected[inner], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(weights.sum(axis=1), 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    "template, positions, channels",
    [
        (keras.layers.Dense(8, use_bias=False), (), 1),
        (keras.layers.Dense(3, use_bias=False), (16,), 1),
        (keras.layers.Conv2D(2, 1, use_bias=False), (6, 7), 1),
    ],
    ids=["dense-units", "dense-time", "conv2d"],
)
def test_cut_is_one_box(template, positions, channels):
    """Slot 0 fills one box (cyclic along each axis) of the feature positions."""
    layer = MixedEncoders(template, 2, mixing="cut", prob=1.0, seed=5)
    _, _, mixed = _slot0_share(layer, 50, positions, channels)
    mask = mixed > 1.0
    if positions:
        # The same mask for every output channel.
        assert (mask == mask[..., :1]).all()
        mask = mask[..., 0]
    for cut in mask:
        if not cut.any() or cut.all():
            continue
        # The cut region is the product of one cyclic interval per axis.
        intervals = [
            np.any(cut, axis=tuple(a for a in range(cut.ndim) if a != axis))
            for axis in range(cut.ndim)
        ]
        box = intervals[0]
        for interval in intervals[1:]:
            box = np.multiply.outer(box, interval)
        np.testing.assert_array_equal(cut, box)
        for interval in intervals:
            # One run of True, cyclically: at most one rising edge (none when full).
            rises = np.sum(interval & ~np.roll(interval, 1))
            assert rises <= 1


@pytest.mark.parametrize(
    "template, shape",
    [
        (keras.layers.Dense(6), (16, 4)),
        (keras.layers.Conv1D(3, 3), (16, 10, 4)),
        (keras.layers.Conv2D(3, 3, padding="same"), (16, 5, 5, 4)),
    ],
    ids=["dense", "conv1d", "conv2d"],
)
@pytest.mark.parametrize("n", [2, 3])
def test_cut_with_zero_probability_is_linear(template, shape, n, rng):
    shape = shape[:-1] + (n * shape[-1],)
    x = rng.normal(size=shape).astype("float32")
    outputs = {}
    for mixing in ("cut", "linear"):
        keras.utils.set_random_seed(0)
        layer = MixedEncoders(template, n, mixing=mixing, prob=0.0, seed=9)
        mixed, weights = layer(x, training=True, return_slot_weights=True)
        outputs[mixing] = (keras.ops.convert_to_numpy(mixed), keras.ops.convert_to_numpy(weights))
    np.testing.assert_allclose(outputs["cut"][0], outputs["linear"][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs["cut"][1], outputs["linear"][1], rtol=1e-6, atol=1e-6)


def test_more_than_two_slots_cut_first_and_mix_the_others(rng):
    """n > 2: CutMix of slot 0 with MixUp of the others (Dirichlet ratios)."""
    layer = MixedEncoders(keras.layers.Conv1D(1, 1, use_bias=False), 3, prob=1.0, seed=2)
    x = np.concatenate(
        [np.full((500, 20, 1), 1.0), np.full((500, 20, 1), 2.0), np.full((500, 20, 1), 4.0)],
        axis=-1,
    ).astype("float32")
    layer.build(x.shape)
    for encoder in layer.encoders:
        encoder.kernel.assign(np.ones(encoder.kernel.shape, "float32"))
    mixed, weights = layer(x, training=True, return_slot_weights=True)
    mixed = keras.ops.convert_to_numpy(mixed)[..., 0]
    weights = keras.ops.convert_to_numpy(weights)
    np.testing.assert_allclose(weights.sum(axis=1), 3.0, rtol=1e-5)
    inside = np.isclose(mixed, 3.0)
    # Outside slot 0's box, the other two slots are mixed linearly: 3 * (2a + 4b), a + b = 1.
    outside = mixed[~inside]
    assert ((outside >= 6.0 - 1e-4) & (outside <= 12.0 + 1e-4)).all()
    # Slot 0 fills a third of the positions on average (Dirichlet(2, 2, 2)).
    assert abs(inside.mean() - 1 / 3) < 0.03


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"layer": keras.layers.LSTM(3)}, TypeError),
        ({"mixing": "mean"}, ValueError),
        ({"alpha": 0.0}, ValueError),
        ({"prob": 1.5}, ValueError),
        ({"root": -1.0}, ValueError),
        ({"n": 0}, ValueError),
    ],
)
def test_invalid_arguments_name_themselves(kwargs, error):
    arguments = {"layer": keras.layers.Dense(3), "n": 2, **kwargs}
    name = next(iter(kwargs))
    with pytest.raises(error, match=name if name != "layer" else "`layer`"):
        MixedEncoders(**arguments)


def test_channels_not_a_multiple_of_n():
    layer = MixedEncoders(keras.layers.Dense(3), 2)
    with pytest.raises(ValueError, match="multiple of n=2"):
        layer(np.zeros((2, 5), "float32"))


def test_config_round_trip(rng):
    layer = MixedEncoders(
        keras.layers.Conv1D(3, 3, activation="relu"),
        2,
        mixing="linear",
        alpha=1.0,
        prob=0.3,
        root=2.0,
        seed=4,
        name="mixed",
    )
    x = rng.normal(size=(4, 6, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer), safe_mode=True
    )
    assert restored.get_config() == layer.get_config()
    assert restored.built
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), expected, rtol=1e-6)
