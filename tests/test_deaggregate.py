"""Deaggregate: grouped outputs back to one row per sample."""

import inspect
import re

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras.src import testing

import keras_agrlearn
from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate


class DeaggregateLayerTest(testing.TestCase):
    """Keras' own layer harness, with exact output shapes."""

    @parameterized.named_parameters(
        ("group", {"n": 2, "inference": "group"}, (3, 4, 6), (6, 4, 3), {}, (6, 4, 3)),
        ("group_partial", {"n": 2, "inference": "group"}, (3, 4, 6), (5, 4, 3), {}, (5, 4, 3)),
        ("axis_1", {"n": 2, "axis": 1, "inference": "group"}, (3, 6, 4), (6, 3, 4), {}, (6, 3, 4)),
        ("replicate", {"n": 3}, (5, 9), (5, 3), {"training": False}, (5, 3)),
        ("replicate_training", {"n": 3}, (5, 9), (14, 3), {"training": True}, (14, 3)),
    )
    def test_layer(self, init_kwargs, input_shape, reference_shape, call_kwargs, expected_shape):
        self.run_layer_test(
            Deaggregate,
            init_kwargs=init_kwargs,
            input_shape={"inputs_shape": input_shape, "reference_shape": reference_shape},
            call_kwargs=call_kwargs,
            # The harness's training model feeds one tensor; the layer needs
            # its reference (and has no weights to train).
            run_training_check=False,
            expected_output_shape=expected_shape,
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
        )


def test_arguments_in_the_order_of_aggregate():
    # Both layers take (n, *, axis, inference, ...), in signature, docstring
    # and config alike.
    names = {}
    for layer_cls in (Aggregate, Deaggregate):
        parameters = inspect.signature(layer_cls.__init__).parameters
        names[layer_cls] = [name for name in parameters if name not in ("self", "kwargs")]
        assert all(
            parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names[layer_cls][1:]
        )
        args = layer_cls.__doc__.split("    Args:\n")[1].split("\n\n")[0]
        assert re.findall(r"^ {8}(\w+):", args, re.M) == names[layer_cls]
        config = layer_cls(2).get_config()
        assert [key for key in config if key in names[layer_cls]] == names[layer_cls]
    assert names[Deaggregate] == ["n", "axis", "inference", "objective"]
    assert names[Aggregate][:3] == names[Deaggregate][:3]
    with pytest.raises(TypeError, match="positional argument"):
        Deaggregate(2, -1)


@pytest.mark.parametrize(
    "config, inference",
    [
        ({"n": 2, "axis": -1, "objective": "mean"}, "group"),
        ({"n": 2, "inference": "replicate"}, "replicate"),
    ],
    ids=["saved-before-1.0", "complete"],
)
def test_config_without_inference_keeps_the_old_default(config, inference):
    assert Deaggregate.from_config({"name": "saved", **config}).inference == inference


def test_defaults_are_those_of_aggregate_and_wrap():
    layer = Deaggregate(3)
    assert (layer.axis, layer.inference, layer.objective) == (-1, Aggregate(3).inference, "mean")
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    wrapped = keras_agrlearn.wrap(backbone, n=3, width=1.0)
    (inside,) = [layer for layer in wrapped.layers if isinstance(layer, Deaggregate)]
    assert (inside.inference, inside.objective) == (layer.inference, layer.objective)


def test_config_written_with_keywords_loads():
    # Saved `.keras` files store keyword configs, so the order change keeps them loading.
    config = {"name": "d", "n": 3, "inference": "replicate", "axis": 1, "objective": "slots"}
    layer = Deaggregate.from_config(config)
    assert (layer.n, layer.axis, layer.inference, layer.objective) == (3, 1, "replicate", "slots")


@pytest.mark.parametrize(
    "inference, training, readout, expected",
    [
        ("replicate", False, None, (4, 5)),
        ("replicate", None, None, (4, 5)),
        ("group", True, (3, 2), (3, 5)),
        ("contextual", False, (3, 4), (3, 5)),
    ],
)
def test_rows(inference, training, readout, expected):
    # Without readout or reference only replicate inference knows its rows;
    # the refused cases are in test_bad_input.py.
    layer = Deaggregate(2, inference=inference)
    y = np.arange(40, dtype="float32").reshape(4, 10)
    kwargs = {"training": training}
    if readout is not None:
        kwargs["readout"] = np.zeros(readout, "int32")
    assert tuple(keras.ops.convert_to_numpy(layer(y, **kwargs)).shape) == expected


def test_slots_objective_returns_every_owned_slot_in_training_only(rng):
    x = rng.normal(size=(6, 2)).astype("float32")
    y, readout = Aggregate(2, inference="group", repetition=0.5, batch_repetition=1, seed=1)(
        x, training=True, return_readout=True
    )
    layer = Deaggregate(2, inference="group", objective="slots")
    slots = keras.ops.convert_to_numpy(layer(y, readout=readout, training=True))
    assert slots.shape == (6, 2, 2)
    np.testing.assert_allclose(slots, np.broadcast_to(x[:, None], (6, 2, 2)), rtol=1e-6)
    mean = keras.ops.convert_to_numpy(layer(y, readout=readout, training=False))
    np.testing.assert_allclose(mean, x, rtol=1e-6)
