"""Property-based tests: `Deaggregate` after `Aggregate` gives each sample its own row.

Between the two layers sits a per-slot identity, standing in for a network
that copies each slot's features to its outputs. Whatever n, batch size,
shape, axis and layout, every sample must get back exactly its own values.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate
from keras_agrlearn._validation import INFERENCE_MODES

SETTINGS = settings(
    # JAX compiles every eager op once per new shape, which makes each example
    # about ten times dearer there than on the other backends.
    max_examples=8 if keras.backend.backend() == "jax" else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# These layers hold no trained state, and the reset would run once per
# test, not once per example.
pytestmark = pytest.mark.keep_session


@st.composite
def cases(draw):
    n = draw(st.integers(1, 4))
    batch = draw(st.integers(1, 9))
    features = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    rank = len(features) + 1
    axis = draw(st.sampled_from(list(range(1, rank)) + list(range(-rank + 1, 0))))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).normal(size=[batch] + features).astype("float32")
    return n, axis, x, seed


def roundtrip(aggregate, deaggregate, x, training):
    grouped, readout = aggregate(x, training=training, return_readout=True)
    restored = deaggregate(grouped, readout=readout, training=training)
    return keras.ops.convert_to_numpy(restored)


@SETTINGS
@given(cases())
def test_group_layout_roundtrip(case):
    n, axis, x, _ = case
    grouped = Aggregate(n, axis=axis, inference="group")(x)
    restored = Deaggregate(n, axis=axis, inference="group")(grouped, x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), x)


@SETTINGS
@given(cases(), st.sampled_from(INFERENCE_MODES))
def test_inference_layouts_roundtrip(case, inference):
    n, axis, x, seed = case
    aggregate = Aggregate(n, axis=axis, inference=inference, draws=2, seed=seed)
    deaggregate = Deaggregate(n, inference=inference, axis=axis)
    np.testing.assert_allclose(roundtrip(aggregate, deaggregate, x, False), x, rtol=1e-6)


@SETTINGS
@given(cases(), st.booleans(), st.sampled_from([0.0, 0.3, 0.9]))
def test_training_layouts_roundtrip(case, shuffle, repetition):
    n, axis, x, seed = case
    aggregate = Aggregate(n, axis=axis, shuffle=shuffle, repetition=repetition, seed=seed)
    deaggregate = Deaggregate(n, axis=axis, inference=aggregate.inference)
    np.testing.assert_allclose(roundtrip(aggregate, deaggregate, x, True), x, rtol=1e-6)


@SETTINGS
@given(cases())
def test_each_group_holds_n_distinct_samples_in_order(case):
    # The aggregated tensor itself: slot s of group g is sample g*n + s, the
    # last group completed cyclically from the start of the batch.
    n, axis, x, _ = case
    grouped = keras.ops.convert_to_numpy(Aggregate(n, axis=axis, inference="group")(x))
    batch = len(x)
    groups = -(-batch // n)
    slots = np.split(grouped, n, axis=axis)
    for s, slot in enumerate(slots):
        expected = x[[(g * n + s) % batch for g in range(groups)]]
        np.testing.assert_array_equal(slot, expected)
