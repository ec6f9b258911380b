import inspect
import math
import re

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras.src import testing

import keras_agrlearn
from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate

# Consecutive groups in training and inference: the layout the NumPy
# references below state (the defaults add input and batch repetition).
GROUP = {"inference": "group", "repetition": 0.0, "batch_repetition": 1}


def reference_aggregate(x, n, axis):
    """NumPy statement of the layout: sample g*n+s at [s*C, (s+1)*C) of `axis`."""
    batch = len(x)
    groups = math.ceil(batch / n)
    slots = x[np.arange(groups * n) % batch]
    return np.stack(
        [np.concatenate([slots[g * n + s] for s in range(n)], axis=axis - 1) for g in range(groups)]
    )


def reference_replicate(x, n, axis):
    return np.concatenate([x] * n, axis=axis)


LAYOUTS = [
    # (shape without batch, axis)
    ((5,), -1),
    ((4, 3), -1),
    ((4, 3), 1),
    ((3, 4, 2), -1),
    ((3, 4, 2), 1),
    ((3, 4, 2), 2),
    ((2, 3, 2, 2), -2),
]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_group_layout_matches_reference(shape, axis, n, rng):
    positive = axis % (len(shape) + 1)
    for batch in (1, 2, 5, 8, 9):
        x = rng.normal(size=(batch,) + shape).astype("float32")
        y = keras.ops.convert_to_numpy(Aggregate(n, axis=axis, **GROUP)(x, training=True))
        np.testing.assert_array_equal(y, reference_aggregate(x, n, positive))
        for training in (True, False):
            back = Deaggregate(n, axis=axis, inference="group")(
                keras.ops.convert_to_tensor(y), x, training=training
            )
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(back), x)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_replicate_layout_matches_reference(shape, axis, n, rng):
    x = rng.normal(size=(5,) + shape).astype("float32")
    layer = Aggregate(n, axis=axis, **{**GROUP, "inference": "replicate"})
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(y, reference_replicate(x, n, axis % (len(shape) + 1)))
    # In training the replicate layer groups like any other.
    y_train = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_array_equal(y_train, reference_aggregate(x, n, axis % (len(shape) + 1)))
    mean = Deaggregate(n, inference="replicate", axis=axis)(y, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mean), x, rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a PyTorch memory order")
@pytest.mark.parametrize(
    "kwargs,training,batch",
    [
        ({"inference": "group"}, False, 6),
        ({"inference": "group"}, False, 7),
        ({"inference": "replicate"}, False, 5),
        ({"shuffle": True}, True, 6),
        ({"batch_repetition": 2, "repetition": 0.5}, True, 7),
    ],
)
def test_torch_output_lies_channels_first_in_memory(kwargs, training, batch, rng):
    # Keras' PyTorch convolutions copy channels-last inputs to channels-first
    # unless they already lie that way; Aggregate writes its output so.
    for shape in [(4, 5, 2), (5, 2)]:  # Conv2D and Conv1D inputs
        x = rng.normal(size=(batch,) + shape).astype("float32")
        y = Aggregate(3, seed=1, **kwargs)(x, training=training, return_readout=True)[0]
        assert y.shape[-1] == 6
        assert keras.ops.moveaxis(y, -1, 1).is_contiguous()


@pytest.mark.parametrize(
    "kwargs,training",
    [
        ({"inference": "group"}, False),
        ({"inference": "replicate"}, False),
        ({"inference": "contextual", "draws": 3}, False),
        ({"shuffle": True}, True),
        ({"repetition": 0.5}, True),
        ({"shuffle": True, "repetition": 0.3}, True),
    ],
)
def test_readout_returns_each_sample_to_its_row(kwargs, training, rng):
    aggregate = Aggregate(3, seed=7, **{**GROUP, **kwargs})
    deaggregate = Deaggregate(3, inference=aggregate.inference)
    for batch in (1, 2, 7, 12):
        x = rng.normal(size=(batch, 3, 2)).astype("float32")
        y, readout = aggregate(x, training=training, return_readout=True)
        back = deaggregate(y, readout=readout, training=training)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(back), x, rtol=1e-6)


def test_shuffle_permutes_groups_in_training_only(rng):
    x = np.arange(12, dtype="float32").reshape(12, 1)
    layer = Aggregate(3, shuffle=True, seed=3, **GROUP)
    shuffled, _ = layer(x, training=True, return_readout=True)
    shuffled = keras.ops.convert_to_numpy(shuffled)
    assert sorted(shuffled.ravel().tolist()) == list(range(12))
    assert shuffled.ravel().tolist() != list(range(12))
    plain = keras.ops.convert_to_numpy(layer(x, training=False))
    assert plain.ravel().tolist() == list(range(12))


def test_contextual_places_the_sample_among_batch_companions():
    x = np.arange(6, dtype="float32").reshape(6, 1)
    layer = Aggregate(3, inference="contextual", draws=5, seed=0)
    y, readout = layer(x, training=False, return_readout=True)
    y, readout = keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(readout)
    assert y.shape == (30, 3) and readout.shape == (6, 5)
    slots = y.reshape(-1)
    for sample in range(6):
        np.testing.assert_array_equal(slots[readout[sample]], sample)
    assert set(slots.tolist()) <= set(range(6))


@pytest.mark.parametrize("layer_cls", [Aggregate, Deaggregate])
def test_config_round_trip(layer_cls):
    layer = layer_cls(4, inference="replicate", axis=1, name="grouping")
    clone = layer_cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is layer_cls and restored.n == 4


def test_symbolic_shapes():
    inputs = keras.Input((6, 5, 3))
    aggregated = Aggregate(2, **GROUP)(inputs)
    assert tuple(aggregated.shape) == (None, 6, 5, 6)
    deaggregated = Deaggregate(2, inference="group")(aggregated, inputs)
    assert tuple(deaggregated.shape) == (None, 6, 5, 3)
    aggregated, readout = Aggregate(2, **GROUP)(inputs, return_readout=True)
    assert tuple(readout.shape) == (None, 1) and readout.dtype == "int32"


class AggregateLayerTest(testing.TestCase):
    """Keras' own layer harness: build, symbolic and eager calls, a training
    step, serialization and mixed precision, with exact output shapes."""

    @parameterized.named_parameters(
        ("group", {"n": 2}, {}, (3, 4, 6)),
        ("group_axis_1", {"n": 2, "axis": 1}, {}, (3, 8, 3)),
        ("training", {"n": 2}, {"training": True}, (3, 4, 6)),
        ("replicate", {"n": 3, "inference": "replicate"}, {"training": False}, (5, 4, 9)),
        ("identity", {"n": 1}, {}, (5, 4, 3)),
    )
    def test_layer(self, init_kwargs, call_kwargs, expected_shape):
        self.run_layer_test(
            Aggregate,
            init_kwargs={**GROUP, **init_kwargs},
            input_shape=(5, 4, 3),
            call_kwargs=call_kwargs,
            expected_output_shape=expected_shape,
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=1,
        )

    @parameterized.named_parameters(
        (
            "contextual",
            {"n": 2, "inference": "contextual", "draws": 3},
            False,
            ((15, 4, 6), (5, 3)),
        ),
        ("shuffle", {"n": 2, "shuffle": True}, True, ((3, 4, 6), (5, 1))),
        # 3 of 5 samples repeated: 1 mixed group + 3 repeated, twice.
        (
            "repetitions",
            {"n": 2, "repetition": 0.5, "batch_repetition": 2},
            True,
            ((8, 4, 6), (5, 4)),
        ),
    )
    def test_layer_with_readout(self, init_kwargs, training, expected_shapes):
        # The training step sums a single output, so it is left out here; so
        # is the mixed-precision check, which calls compute_output_spec
        # without the call arguments (no return_readout), and a random layout
        # refuses that call. The cases above check mixed precision.
        self.run_layer_test(
            Aggregate,
            init_kwargs={**GROUP, **init_kwargs},
            input_shape=(5, 4, 3),
            call_kwargs={"training": training, "return_readout": True},
            expected_output_shape=expected_shapes,
            run_training_check=False,
            run_mixed_precision_check=False,
        )


@pytest.mark.parametrize(
    "kwargs, training, batch, expected",
    [
        ({}, None, 7, 4),
        ({}, True, 7, 4),
        ({}, False, 7, 4),
        ({"inference": "replicate"}, False, 7, 7),
        ({"inference": "replicate"}, True, 7, 4),
        ({"inference": "replicate"}, None, 7, None),
        ({"inference": "contextual", "draws": 3}, False, 7, 21),
        ({"shuffle": True}, True, 7, 4),
        ({"repetition": 0.5}, True, 7, 6),  # 4 repeated, 3 grouped in 2
        ({"batch_repetition": 3}, True, 7, 12),
        ({"batch_repetition": 3}, False, 7, 4),
        ({}, None, None, None),
    ],
)
def test_static_output_batch(kwargs, training, batch, expected):
    layer = Aggregate(2, **{**GROUP, **kwargs})
    if training is None:
        assert layer.compute_output_shape((batch, 3)) == (expected, 6)
    spec = layer.compute_output_spec(
        keras.KerasTensor((batch, 3)), training=training, return_readout=True
    )[0]
    assert tuple(spec.shape) == (expected, 6)
    if batch is not None and training is not None:
        x = np.zeros((batch, 3), "float32")
        y, _ = layer(x, training=training, return_readout=True)
        assert tuple(y.shape) == (expected, 6)


def _backbone():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(3, activation="softmax")]
    )


def _settings(layer):
    return {
        k: v
        for k, v in layer.get_config().items()
        if k not in ("name", "axis", "dtype", "trainable")
    }


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"n": 3}, {"inference": "replicate", "repetition": 0.5, "batch_repetition": 1}),
        ({"n": 2}, {"inference": "replicate", "repetition": 0.5, "batch_repetition": 1}),
        ({"n": 1}, {"inference": "replicate", "repetition": 0.0, "batch_repetition": 1}),
        (
            {"n": 2, "inference": "group"},
            {"inference": "group", "repetition": 0.0, "batch_repetition": 1},
        ),
        (
            {"n": 2, "inference": "contextual"},
            {"inference": "contextual", "repetition": 0.0, "batch_repetition": 1},
        ),
    ],
    ids=["n3", "n2", "n1", "group", "contextual"],
)
def test_defaults_are_those_of_wrap(kwargs, expected):
    layer = Aggregate(**kwargs)
    assert {key: getattr(layer, key) for key in expected} == expected
    assert (layer.shuffle, layer.draws, layer.seed) == (False, 4, None)
    wrapped = keras_agrlearn.wrap(_backbone(), width=1.0, **kwargs)
    (inside,) = [layer for layer in wrapped.layers if isinstance(layer, Aggregate)]
    assert _settings(inside) == _settings(layer)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"n": 2, "axis": -1, "shuffle": False, "draws": 4, "seed": None}, ("group", 0.0, 1)),
        ({"n": 2, "inference": "replicate", "repetition": 0.5}, ("replicate", 0.5, 1)),
        (
            {"n": 2, "inference": "replicate", "repetition": 0.5, "batch_repetition": 2},
            ("replicate", 0.5, 2),
        ),
    ],
    ids=["before-inference-default", "before-batch-repetition", "complete"],
)
def test_config_without_a_key_keeps_the_old_default(config, expected):
    # A layer saved before 1.0 behaves as it did: a missing key means the
    # default of then (group inference, no input or batch repetition).
    layer = Aggregate.from_config({"name": "saved", **config})
    assert (layer.inference, layer.repetition, layer.batch_repetition) == expected


def test_one_argument_order_in_signature_docstring_and_config():
    parameters = inspect.signature(Aggregate.__init__).parameters
    names = [name for name in parameters if name not in ("self", "kwargs")]
    assert names == [
        "n",
        "axis",
        "inference",
        "shuffle",
        "repetition",
        "batch_repetition",
        "draws",
        "seed",
    ]
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names[1:])
    args = Aggregate.__doc__.split("    Args:\n")[1].split("\n\n")[0]
    assert re.findall(r"^ {8}(\w+):", args, re.M) == names
    config = Aggregate(2).get_config()
    assert [key for key in config if key in names] == names


def test_arguments_after_n_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        Aggregate(2, -1)


def test_symbolic_call_without_readout_is_refused_without_a_call_override():
    # Keras' own hooks carry the check: compute_output_spec sees the symbolic
    # call's `training` (None: both modes) and `return_readout`.
    assert "__call__" not in vars(Aggregate)
    with pytest.raises(ValueError, match=r"draws its groups at random"):
        Aggregate(2)(keras.Input((3,)))
    aggregated, readout = Aggregate(2)(keras.Input((3,)), return_readout=True)
    assert len(readout.shape) == 2 and readout.shape[0] is None
