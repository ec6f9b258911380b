"""The bad-input catalogue: every invalid argument fails early and says why.

Each case checks the exception type and that the message names the argument
and what is allowed, so a typo never surfaces as a reshape error inside a
backend. docs/RELIABILITY.md lists the same cases as a table.
"""

import math
import re

import keras
import numpy as np
import pytest

from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

N_MESSAGE = r"Argument `n` \(the aggregation factor\) must be an integer >= 1"
WIDTH_MESSAGE = r"Argument `width` \(the width multiplier\) must be a finite number > 0"
INFERENCE_MESSAGE = (
    r"Argument `inference` must be one of 'group', 'replicate', 'contextual'"
)


@pytest.fixture(autouse=True)
def _fresh_session():
    """Overrides the suite's per-test session reset, which these tests do not need.

    They only build models and check the error each bad input raises; nothing
    trains, so no random state matters, and the reset's full garbage
    collection would cost more than the tests themselves.
    """
    yield


def backbone(classes=3, features=6):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(classes, activation="softmax", name="scores"),
        ]
    )


CONSTRUCTORS = {
    "wrap": lambda **kw: wrap(backbone(), **kw),
    "Aggregate": lambda **kw: Aggregate(**kw),
    "Deaggregate": lambda **kw: Deaggregate(**kw),
}


@pytest.mark.parametrize(
    "n, error",
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)],
    ids=["zero", "negative", "float", "bool", "str"],
)
def test_invalid_n(n, error):
    for constructor in CONSTRUCTORS.values():
        with pytest.raises(error, match=N_MESSAGE) as info:
            constructor(n=n)
        assert repr(n) in str(info.value) or f"n={n}" in str(info.value)


@pytest.mark.parametrize(
    "width, error",
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("2", TypeError),
        (True, TypeError),
    ],
    ids=["zero", "negative", "nan", "inf", "str", "bool"],
)
def test_invalid_width(width, error):
    with pytest.raises(error, match=WIDTH_MESSAGE):
        wrap(backbone(), n=2, width=width)


@pytest.mark.parametrize("inference", ["batched", "Replicate", None])
def test_unknown_inference_mode(inference):
    for constructor in CONSTRUCTORS.values():
        with pytest.raises(ValueError, match=INFERENCE_MESSAGE):
            constructor(n=2, inference=inference)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"draws": 0}, r"Argument `draws`.*integer >= 1"),
        ({"repetition": 1.0}, r"Argument `repetition`.*\[0, 1\)"),
        ({"repetition": -0.1}, r"Argument `repetition`.*\[0, 1\)"),
        ({"head": "missing"}, r"Argument `head`: no layer named 'missing'"),
        ({"aggregate_after": "missing"}, r"Argument `aggregate_after`: no layer named"),
    ],
    ids=lambda value: str(value),
)
def test_invalid_strategy_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wrap(backbone(), n=2, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"draws": 1.5}, r"Argument `draws`.*integer >= 1"),
        ({"repetition": "0.5"}, r"Argument `repetition`.*\[0, 1\)"),
        ({"batch_repetition": 2.0}, r"Argument `batch_repetition`.*integer >= 1"),
    ],
    ids=lambda value: str(value),
)
def test_wrong_option_types(kwargs, match):
    with pytest.raises(TypeError, match=match):
        wrap(backbone(), n=2, **kwargs)
    with pytest.raises(TypeError, match=match):
        Aggregate(n=2, **kwargs)


@pytest.mark.parametrize(
    "layer, shape, error, match",
    [
        (lambda: Aggregate(2, axis=2), (4, 6), ValueError, r"must address .* got axis=2"),
        (lambda: Aggregate(2, axis=0), (4, 6), ValueError, r"must address .* got axis=0"),
        (lambda: Aggregate(2, axis=-3), (4, 6), ValueError, r"must address .* got axis=-3"),
        (lambda: Aggregate(2), (4,), ValueError, r"rank >= 2"),
        (lambda: Deaggregate(2, axis=4), (4, 6), ValueError, r"Argument `axis` must address"),
        (lambda: Deaggregate(4), (4, 6), ValueError, r"Deaggregate\(n=4\) needs .* a multiple of n"),
    ],
    ids=["above-rank", "batch-axis", "below-rank", "rank-1", "deaggregate-axis", "not-multiple"],
)
def test_axis_out_of_range(layer, shape, error, match):
    with pytest.raises(error, match=match):
        layer()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("constructor", [Aggregate, Deaggregate])
def test_non_integer_axis(constructor):
    with pytest.raises(TypeError, match=r"Argument `axis` must be an integer, got 1.0"):
        constructor(2, axis=1.0)


def test_contextual_deaggregate_needs_readout():
    with pytest.raises(ValueError, match=r"needs the `readout`"):
        Deaggregate(2, inference="contextual")(np.zeros((3, 6), "float32"))


class _Subclassed(keras.Model):
    def call(self, inputs):
        return inputs


def _two_inputs():
    a, b = keras.Input((3,)), keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], outputs)


@pytest.mark.parametrize(
    "make_model, error, match",
    [
        (lambda: keras.Sequential([keras.layers.Dense(3)]), ValueError, r"has no inputs yet"),
        (lambda: _Subclassed(), ValueError, r"subclassed model"),
        (lambda: keras.layers.Dense(3), TypeError, r"Argument `model` must be a keras.Model"),
        (lambda: "model", TypeError, r"Argument `model` must be a keras.Model"),
    ],
    ids=["unbuilt-sequential", "subclassed", "layer", "string"],
)
def test_model_that_cannot_be_wrapped(make_model, error, match):
    with pytest.raises(error, match=match):
        wrap(make_model(), n=2)


def test_two_inputs_need_one_shared_grouping():
    # Several inputs are aggregated with the same grouping; a per-batch random
    # permutation cannot be shared between them, so it is refused.
    assert wrap(_two_inputs(), n=2).output_shape == (None, 2)
    with pytest.raises(ValueError, match=r"more than one place"):
        wrap(_two_inputs(), n=2, shuffle=True)


def test_head_units_differ_from_labels_surfaces_keras_error():
    # One-hot labels for 5 classes against a 3-class head: the wrapped model must
    # fail with Keras' own shape message, as the plain model does.
    x = np.zeros((8, 6), "float32")
    y = np.eye(5, dtype="float32")[np.arange(8) % 5]
    messages = []
    for model in (backbone(), wrap(backbone(), n=2)):
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        with pytest.raises(ValueError, match=r"`target` and `output` must have the same shape") as info:
            model.fit(x, y, epochs=1, verbose=0)
        messages.append(str(info.value))
    assert "reshape" not in messages[1].lower()
    assert re.search(r"output.shape=.*\b3\]?\)", messages[1])


@pytest.mark.parametrize(
    "make_layer", [lambda: Aggregate(2), lambda: wrap(backbone(), n=2)], ids=["Aggregate", "wrap"]
)
def test_empty_batch_is_refused(make_layer):
    with pytest.raises(ValueError, match=r"empty batch \(0 samples\)"):
        make_layer()(np.zeros((0, 6), "float32"))
