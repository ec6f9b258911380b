"""Deaggregate: grouped outputs back to one row per sample."""

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras.src import testing

from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate


class DeaggregateLayerTest(testing.TestCase):
    """Keras' own layer harness, with exact output shapes."""

    @parameterized.named_parameters(
        ("group", {"n": 2}, (3, 4, 6), {}, (6, 4, 3)),
        ("axis_1", {"n": 2, "axis": 1}, (3, 6, 4), {}, (6, 3, 4)),
        ("replicate", {"n": 3, "inference": "replicate"}, (5, 9), {"training": False}, (5, 3)),
        ("replicate_training", {"n": 3, "inference": "replicate"}, (5, 9), {"training": True}, (15, 3)),
    )
    def test_layer(self, init_kwargs, input_shape, call_kwargs, expected_shape):
        self.run_layer_test(
            Deaggregate,
            init_kwargs=init_kwargs,
            input_shape=input_shape,
            call_kwargs=call_kwargs,
            expected_output_shape=expected_shape,
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
        )


def test_arguments_in_the_order_of_aggregate():
    # Both layers take (n, axis, inference, ...): positional calls agree.
    aggregate, deaggregate = Aggregate(2, 1, "replicate"), Deaggregate(2, 1, "replicate")
    assert (aggregate.axis, aggregate.inference) == (deaggregate.axis, deaggregate.inference) == (1, "replicate")


def test_config_written_with_keywords_loads():
    # Saved `.keras` files store keyword configs, so the order change keeps them loading.
    config = {"name": "d", "n": 3, "inference": "replicate", "axis": 1, "objective": "slots"}
    layer = Deaggregate.from_config(config)
    assert (layer.n, layer.axis, layer.inference, layer.objective) == (3, 1, "replicate", "slots")


@pytest.mark.parametrize(
    "inference, training, readout, expected",
    [
        ("group", None, None, (8, 5)),
        ("replicate", False, None, (4, 5)),
        ("replicate", True, None, (8, 5)),
        ("contextual", True, None, (8, 5)),
        ("group", True, (3, 2), (3, 5)),
    ],
)
def test_rows(inference, training, readout, expected):
    layer = Deaggregate(2, inference=inference)
    y = np.arange(40, dtype="float32").reshape(4, 10)
    kwargs = {"training": training}
    if readout is not None:
        kwargs["readout"] = np.zeros(readout, "int32")
    assert tuple(keras.ops.convert_to_numpy(layer(y, **kwargs)).shape) == expected


def test_slots_objective_returns_every_owned_slot_in_training_only(rng):
    x = rng.normal(size=(6, 2)).astype("float32")
    y, readout = Aggregate(2, repetition=0.5, seed=1)(x, training=True, return_readout=True)
    layer = Deaggregate(2, objective="slots")
    slots = keras.ops.convert_to_numpy(layer(y, readout=readout, training=True))
    assert slots.shape == (6, 2, 2)
    np.testing.assert_allclose(slots, np.broadcast_to(x[:, None], (6, 2, 2)), rtol=1e-6)
    mean = keras.ops.convert_to_numpy(layer(y, readout=readout, training=False))
    np.testing.assert_allclose(mean, x, rtol=1e-6)
