"""The bad-input catalogue: every invalid argument fails early and says why.

The one place for the library's bad inputs. Each case checks the exception
type and that the message names the argument and what is allowed, so a typo
never surfaces as a reshape error inside a backend. One rule for the type: a
value of the wrong type is a TypeError, a value of the right type that is out
of range, not among the choices or contradicting another argument a
ValueError. docs/RELIABILITY.md lists the cases as a table.
"""

import math
import re

import keras
import numpy as np
import pytest
import subclassed_models

from keras_agrlearn import Aggregate
from keras_agrlearn import Deaggregate
from keras_agrlearn import wrap

# These tests only build models and check the error each bad input raises.
pytestmark = pytest.mark.keep_session

N_MESSAGE = r"Argument `n` \(the aggregation factor\) must be an integer >= 1"
WIDTH_MESSAGE = r"Argument `width` \(the width multiplier\) must be a finite number > 0"
INFERENCE_MESSAGE = r"Argument `inference` must be one of 'group', 'replicate', 'contextual'"


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
@pytest.mark.parametrize("constructor", CONSTRUCTORS)
def test_invalid_n(constructor, n, error):
    with pytest.raises(error, match=N_MESSAGE) as info:
        CONSTRUCTORS[constructor](n=n)
    assert repr(n) in str(info.value) or f"n={n}" in str(info.value)


@pytest.mark.parametrize("inference", ["batched", "Replicate", None])
@pytest.mark.parametrize("constructor", CONSTRUCTORS)
def test_unknown_inference_mode(constructor, inference):
    with pytest.raises(ValueError, match=INFERENCE_MESSAGE):
        CONSTRUCTORS[constructor](n=2, inference=inference)


@pytest.mark.parametrize(
    "targets, kwargs, error, match",
    [
        (("wrap",), {"width": 0}, ValueError, WIDTH_MESSAGE + ", got width=0"),
        (("wrap",), {"width": -1}, ValueError, WIDTH_MESSAGE),
        (("wrap",), {"width": math.nan}, ValueError, WIDTH_MESSAGE),
        (("wrap",), {"width": math.inf}, ValueError, WIDTH_MESSAGE),
        (("wrap",), {"width": "2"}, TypeError, WIDTH_MESSAGE),
        (("wrap",), {"width": True}, TypeError, WIDTH_MESSAGE),
        (
            ("wrap", "Aggregate"),
            {"draws": 0},
            ValueError,
            r"Argument `draws`.*integer >= 1, got draws=0",
        ),
        (
            ("wrap", "Aggregate"),
            {"draws": 1.5},
            TypeError,
            r"Argument `draws`.*integer >= 1, got 1.5",
        ),
        (
            ("wrap", "Aggregate"),
            {"repetition": 1.0},
            ValueError,
            r"Argument `repetition`.*\[0, 1\)",
        ),
        (
            ("wrap", "Aggregate"),
            {"repetition": -0.1},
            ValueError,
            r"Argument `repetition`.*\[0, 1\)",
        ),
        (
            ("wrap", "Aggregate"),
            {"repetition": "0.5"},
            TypeError,
            r"Argument `repetition`.*\[0, 1\)",
        ),
        (
            ("wrap", "Aggregate"),
            {"batch_repetition": 0},
            ValueError,
            r"Argument `batch_repetition`.*integer >= 1, got batch_repetition=0",
        ),
        (
            ("wrap", "Aggregate"),
            {"batch_repetition": 1.5},
            TypeError,
            r"Argument `batch_repetition`.*integer >= 1, got 1.5",
        ),
        (
            ("wrap", "Aggregate"),
            {"batch_repetition": True},
            TypeError,
            r"Argument `batch_repetition`.*integer >= 1, got True",
        ),
        (
            ("wrap", "Aggregate"),
            {"batch_repetition": "2"},
            TypeError,
            r"Argument `batch_repetition`.*integer >= 1, got '2'",
        ),
        (
            ("wrap", "Aggregate"),
            {"n": 1, "batch_repetition": 2},
            ValueError,
            r"Argument `batch_repetition` must be 1 when n=1",
        ),
        (
            ("wrap", "Deaggregate"),
            {"objective": "sum"},
            ValueError,
            r"Argument `objective` must be one of 'slots', 'mean'",
        ),
        (
            ("Aggregate", "Deaggregate"),
            {"axis": 1.0},
            TypeError,
            r"Argument `axis` must be an integer, got 1.0",
        ),
        (
            ("Aggregate",),
            {"shuffle": "yes"},
            TypeError,
            r"Argument `shuffle` must be True or False, got 'yes'",
        ),
        (
            ("Aggregate",),
            {"seed": 1.5},
            TypeError,
            r"Argument `seed` must be an integer or None, got 1.5",
        ),
        (
            ("wrap",),
            {"strategy": "stems"},
            ValueError,
            r"Argument `strategy` must be one of 'rebuild', 'stem', None",
        ),
        (("wrap",), {"head": "missing"}, ValueError, r"Argument `head`: no layer named 'missing'"),
        (
            ("wrap",),
            {"head": ["scores", "scores"]},
            ValueError,
            r"Argument `head`: the model has 1 output",
        ),
        (
            ("wrap",),
            {"aggregate_after": "missing"},
            ValueError,
            r"Argument `aggregate_after`: no layer named",
        ),
        (
            ("wrap",),
            {"aggregate_after": 3},
            TypeError,
            r"Argument `aggregate_after` must be a layer name",
        ),
        (
            ("wrap",),
            {"aggregate_after": "scores"},
            ValueError,
            r"`aggregate_after`: layer 'scores' is the classification head",
        ),
        (("wrap",), {"classes": 3}, ValueError, r"`classes` is for strategy='stem' only"),
        (
            ("wrap",),
            {"data_format": "channels_first"},
            ValueError,
            r"`data_format` is for strategy='stem' only",
        ),
        (("wrap",), {"strategy": "stem", "width": 2.0}, ValueError, r"need strategy='rebuild'"),
        (
            ("wrap",),
            {"strategy": "stem", "classes": 3},
            ValueError,
            r"has one, whose class count is kept",
        ),
        (
            ("wrap",),
            {"strategy": "stem", "data_format": "nhwc"},
            ValueError,
            r"Argument `data_format` must be one of 'channels_last', 'channels_first'",
        ),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else None,
)
def test_invalid_option(targets, kwargs, error, match):
    for target in targets:
        with pytest.raises(error, match=match):
            CONSTRUCTORS[target](**{"n": 2, **kwargs})


@pytest.mark.parametrize(
    "layer, shape, error, match",
    [
        (lambda: Aggregate(2, axis=2), (4, 6), ValueError, r"must address .* got axis=2"),
        (lambda: Aggregate(2, axis=0), (4, 6), ValueError, r"must address .* got axis=0"),
        (lambda: Aggregate(2, axis=-3), (4, 6), ValueError, r"must address .* got axis=-3"),
        (lambda: Aggregate(2), (4,), ValueError, r"rank >= 2"),
        (lambda: Deaggregate(2, axis=4), (4, 6), ValueError, r"Argument `axis` must address"),
        (
            lambda: Deaggregate(4),
            (4, 6),
            ValueError,
            r"Deaggregate '\w+' \(n=4, inference='replicate'\) needs the size of axis -1 to be "
            r"a multiple of n.*n \* classes units",
        ),
        (
            lambda: Deaggregate(2, inference="group"),
            (3, 6),
            ValueError,
            r"Deaggregate '\w+' \(n=2, inference='group'\) was called without `readout` or "
            r"`reference`",
        ),
        (
            lambda: Deaggregate(2),
            (3, 6),
            ValueError,
            r"without `readout` or `reference`.*Sequential",
        ),
        (lambda: Aggregate(2), (0, 6), ValueError, r"empty batch \(0 samples\)"),
        (
            lambda: Deaggregate(2, inference="contextual"),
            (3, 6),
            ValueError,
            r"needs the `readout`",
        ),
    ],
    ids=[
        "above-rank",
        "batch-axis",
        "below-rank",
        "rank-1",
        "deaggregate-axis",
        "not-multiple",
        "group-alone",
        "training-alone",
        "empty-batch",
        "contextual-without-readout",
    ],
)
def test_invalid_call(layer, shape, error, match):
    training = True if "training-alone" in match or "Sequential" in match else None
    with pytest.raises(error, match=match):
        layer()(np.zeros(shape, "float32"), training=training)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repetition": 0.5},
        {"shuffle": True},
        {"batch_repetition": 2},
        {"inference": "contextual"},
    ],
    ids=lambda value: str(value),
)
def test_random_layout_without_its_readout_is_refused(kwargs):
    # The rows of a random layout can only be realigned by its readout: the
    # building-block pattern `Deaggregate(...)(y, inputs)` must fail, never
    # return misaligned rows, whether built symbolically or run eagerly.
    inputs = keras.Input((4,))
    match = r"draws its groups at random .* `return_readout=True`"
    with pytest.raises(ValueError, match=match):
        Aggregate(2, **kwargs)(inputs)
    training = kwargs.get("inference") != "contextual"
    with pytest.raises(ValueError, match=match):
        Aggregate(2, **kwargs)(np.zeros((6, 4), "float32"), training=training)


def test_reference_and_readout_together_are_refused():
    x = np.arange(12, dtype="float32").reshape(6, 2)
    y, readout = Aggregate(2, shuffle=True, seed=0)(x, training=True, return_readout=True)
    match = r"either `reference` .* or `readout` .*, not both"
    with pytest.raises(ValueError, match=match):
        Deaggregate(2)(y, x, readout=readout, training=True)
    inputs = keras.Input((2,))
    y, readout = Aggregate(2, shuffle=True)(inputs, return_readout=True)
    with pytest.raises(ValueError, match=match):
        Deaggregate(2)(y, inputs, readout=readout)


class _Unbuilt(keras.Model):
    def call(self, inputs):
        return inputs


def _untraceable():
    return subclassed_models.built(subclassed_models.Untraceable, "untraceable")


class _Tokens(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(10, 4)

    def call(self, inputs):
        return keras.ops.mean(self.embedding(inputs), axis=1)


def _tokens():
    model = _Tokens()
    model(np.zeros((1, 5), "int32"))
    return model


def _headless():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8)(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization()(x))


def _tokens_before_embedding():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Identity(name="ids")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _two_inputs():
    a, b = keras.Input((3,)), keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], outputs)


@pytest.mark.parametrize(
    "make_model, kwargs, error, match",
    [
        (lambda: keras.layers.Dense(3), {}, TypeError, r"Argument `model` must be a keras.Model"),
        (lambda: "model", {}, TypeError, r"Argument `model` must be a keras.Model"),
        (lambda: keras.Sequential([keras.layers.Dense(3)]), {}, ValueError, r"has no inputs yet"),
        (_Unbuilt, {}, ValueError, r"subclassed model that is not built"),
        (_Unbuilt, {"classes": 3}, ValueError, r"subclassed model that is not built"),
        (_untraceable, {}, ValueError, r"cannot be traced.*Pass `classes=`"),
        (
            _untraceable,
            {"strategy": "rebuild"},
            ValueError,
            r"cannot be rebuilt layer by layer: its `call` cannot be traced",
        ),
        (
            _untraceable,
            {"classes": 0},
            ValueError,
            r"`classes` \(the number of classes of the new head\) must be an integer >= 1",
        ),
        (
            _untraceable,
            {"classes": 2.0},
            TypeError,
            r"`classes` \(the number of classes of the new head\) must be an integer >= 1",
        ),
        (_untraceable, {"classes": 3, "head": "conv"}, ValueError, r"no layer graph"),
        (_tokens, {"classes": 3}, ValueError, r"token ids.*strategy='rebuild'"),
        (_headless, {}, ValueError, r"classification head.*BatchNormalization"),
        (
            _tokens_before_embedding,
            {"aggregate_after": "ids"},
            ValueError,
            r"integer inputs .* aggregated after their embedding",
        ),
        (_two_inputs, {"shuffle": True}, ValueError, r"aggregation at more than one place"),
        (_two_inputs, {"repetition": 0.5}, ValueError, r"aggregation at more than one place"),
        (_two_inputs, {"batch_repetition": 2}, ValueError, r"aggregation at more than one place"),
        (
            _two_inputs,
            {"inference": "contextual"},
            ValueError,
            r"aggregation at more than one place",
        ),
    ],
    ids=[
        "layer",
        "string",
        "unbuilt-sequential",
        "unbuilt-subclassed",
        "unbuilt-subclassed-stem",
        "untraceable-without-classes",
        "untraceable-rebuild",
        "zero-classes",
        "float-classes",
        "untraceable-head",
        "stem-token-ids",
        "no-head",
        "tokens-before-embedding",
        "two-inputs-shuffle",
        "two-inputs-repetition",
        "two-inputs-batch-repetition",
        "two-inputs-contextual",
    ],
)
def test_model_that_cannot_be_wrapped(make_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        wrap(make_model(), n=2, **kwargs)


def test_model_type_is_checked_before_any_layer_is_made():
    before = keras.backend.get_uid("aggregate")
    with pytest.raises(TypeError):
        wrap("model", n=2)
    # get_uid counts a call too: one more than before means none was made.
    assert keras.backend.get_uid("aggregate") == before + 1


def test_head_units_differ_from_labels_surfaces_keras_error():
    # One-hot labels for 5 classes against a 3-class head: the wrapped model must
    # fail with Keras' own shape message, as the plain model does.
    x = np.zeros((8, 6), "float32")
    y = np.eye(5, dtype="float32")[np.arange(8) % 5]
    messages = []
    for model in (backbone(), wrap(backbone(), n=2)):
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        with pytest.raises(
            ValueError, match=r"`target` and `output` must have the same shape"
        ) as info:
            model.fit(x, y, epochs=1, verbose=0)
        messages.append(str(info.value))
    assert "reshape" not in messages[1].lower()
    assert re.search(r"output.shape=.*\b3\]?\)", messages[1])


def test_empty_batch_is_refused_by_a_wrapped_model():
    with pytest.raises(ValueError, match=r"empty batch \(0 samples\)"):
        wrap(backbone(), n=2)(np.zeros((0, 6), "float32"))


# Input and batch repetition off: the layouts that pass a `reference`.
STILL = {"repetition": 0.0, "batch_repetition": 1}

# (Aggregate arguments, Deaggregate arguments, what Deaggregate receives).
MISMATCHED_PAIRS = [
    ({"n": 2, "inference": "replicate"}, {"n": 2, "inference": "group"}, "readout"),
    ({"n": 2, "inference": "replicate", **STILL}, {"n": 2, "inference": "group"}, "reference"),
    ({"n": 2, "inference": "group", **STILL}, {"n": 2, "inference": "replicate"}, "reference"),
    ({"n": 2, "inference": "group"}, {"n": 2, "inference": "contextual"}, "readout"),
    ({"n": 2}, {"n": 3}, "readout"),
    ({"n": 3}, {"n": 2}, "readout"),
    ({"n": 2, "inference": "group", **STILL}, {"n": 3, "inference": "group"}, "reference"),
    ({"n": 2, "inference": "replicate", **STILL}, {"n": 3, "inference": "group"}, "reference"),
]
PAIR_IDS = [
    "replicate-group-readout",
    "replicate-group-reference",
    "group-replicate-reference",
    "group-contextual-readout",
    "n2-n3-readout",
    "n3-n2-readout",
    "n2-n3-reference",
    "n-and-inference-reference",
]


@pytest.mark.parametrize(
    "aggregate_kwargs, deaggregate_kwargs, via", MISMATCHED_PAIRS, ids=PAIR_IDS
)
def test_mismatched_pair_is_refused_when_the_model_is_built(
    aggregate_kwargs, deaggregate_kwargs, via
):
    inputs = keras.Input((4,))
    aggregate = Aggregate(**aggregate_kwargs)
    if via == "readout":
        x, readout = aggregate(inputs, return_readout=True)
        passed = {"readout": readout}
    else:
        x, passed = aggregate(inputs), {"reference": inputs}
    y = keras.layers.Dense(6)(x)  # a multiple of 2 and of 3
    deaggregate = Deaggregate(**deaggregate_kwargs)
    mine = f"n={deaggregate.n}, inference={deaggregate.inference!r}"
    theirs = f"n={aggregate.n}, inference={aggregate.inference!r}"
    match = (
        rf"Deaggregate '{deaggregate.name}' \({re.escape(mine)}\) does not match "
        rf"Aggregate '{aggregate.name}' \({re.escape(theirs)}\), whose "
        rf"{'readout' if via == 'readout' else 'input'} it receives"
    )
    with pytest.raises(ValueError, match=match):
        deaggregate(y, **passed)


@pytest.mark.parametrize(
    "aggregate_kwargs, deaggregate_kwargs, via", MISMATCHED_PAIRS, ids=PAIR_IDS
)
@pytest.mark.parametrize("batch", [1, 4, 5])
def test_mismatched_pair_never_returns_wrong_rows_eagerly(
    aggregate_kwargs, deaggregate_kwargs, via, batch
):
    # Through an identity network, the right rows are the inputs themselves:
    # every call either raises, naming both settings, or returns them.
    # A backend tensor, so that both layers see the same object (a NumPy
    # reference is converted apart, and only its number of groups is checked).
    x = keras.ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(batch, 6)).astype("float32")
    )
    aggregate = Aggregate(seed=0, **aggregate_kwargs)
    deaggregate = Deaggregate(**deaggregate_kwargs)
    for training in (True, False):
        y, readout = aggregate(x, training=training, return_readout=True)
        passed = {"readout": readout} if via == "readout" else {"reference": x}
        try:
            rows = deaggregate(y, training=training, **passed)
        except ValueError as error:
            assert "Give both layers the same n and inference" in str(error)
            assert f"n={deaggregate.n}" in str(error)
            continue
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(rows), keras.ops.convert_to_numpy(x), rtol=1e-6
        )


def test_mismatched_class_score_width_names_the_deaggregate():
    inputs = keras.Input((4,))
    x, readout = Aggregate(n=2)(inputs, return_readout=True)
    y = keras.layers.Dense(5)(x)
    match = (
        r"Deaggregate '\w+' \(n=2, inference='replicate'\) needs the size of axis -1 to be "
        r"a multiple of n.*got shape \(None, 5\)"
    )
    with pytest.raises(ValueError, match=match):
        Deaggregate(n=2)(y, readout=readout)


@pytest.mark.parametrize(
    "aggregate_kwargs, match",
    [
        (
            {},
            r"call it with `return_readout=True`.*A Sequential model cannot pass it: use "
            r"`keras_agrlearn.wrap",
        ),
        (
            {"inference": "group", **STILL},
            r"without `readout` or `reference`.*Sequential model.*Use "
            r"`keras_agrlearn.wrap.*Functional model",
        ),
        (
            {"inference": "replicate", **STILL},
            r"without `readout` or `reference`.*Sequential model.*Use "
            r"`keras_agrlearn.wrap.*Functional model",
        ),
    ],
    ids=["defaults", "group", "replicate"],
)
def test_sequential_stack_that_cannot_restore_rows_is_refused(aggregate_kwargs, match):
    # Sequential passes one tensor from layer to layer: Deaggregate gets
    # neither readout nor reference, and would return G*n rows for B samples.
    aggregate = Aggregate(n=2, **aggregate_kwargs)
    with pytest.raises(ValueError, match=match):
        keras.Sequential(
            [
                keras.Input((4,)),
                aggregate,
                keras.layers.Dense(6),
                Deaggregate(n=2, inference=aggregate.inference),
            ]
        )
