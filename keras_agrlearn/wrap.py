"""`wrap`: turn a Keras classifier into an AgrLearn model."""

import math

import keras

from keras_agrlearn import _rebuild
from keras_agrlearn import _validation
from keras_agrlearn import stem
from keras_agrlearn._rebuild import scaled_width
from keras_agrlearn.aggregate import Aggregate
from keras_agrlearn.model import AgrLearnModel

__all__ = ["scaled_width", "wrap"]

STRATEGIES = ("rebuild", "stem")
# MIMO-style input repetition by default: it won in every recipe measured
# with replicated inference (docs/RESULTS.md).
DEFAULT_REPETITION = 0.5
# The loss sees the mean of a sample's slots: in the drop-in study (the same
# fit call as the plain model) it beat scoring each slot on 2 of 3 datasets.
DEFAULT_OBJECTIVE = "mean"


def wrap(
    model,
    n=3,
    width=None,
    inference="replicate",
    *,
    shuffle=False,
    repetition=None,
    batch_repetition=None,
    objective=None,
    draws=4,
    seed=None,
    head=None,
    aggregate_after=None,
    name=None,
    strategy=None,
    classes=None,
    verbose=False,
):
    """Turns a Keras classifier into an Aggregated Learning model.

    The result is a new `keras.Model` with the same per-sample inputs and
    outputs as `model`, so every Keras loss, metric, callback and data pipeline
    works unchanged. Two strategies build it:

    `strategy="rebuild"` (Functional and Sequential models, nested models
    included) replays the backbone layer by layer:

    - `Aggregate` goes before the first layer that mixes channels; per-sample
      preprocessing (`Rescaling`, `Normalization`, `TextVectorization`,
      reshapes, `Embedding`, ...) stays per sample and keeps its state. Token
      ids are therefore aggregated after their embedding, along the feature
      axis. Masks (`mask_zero=True`) stop at the aggregation point.
    - Hidden widths are multiplied by `width` with one rounding rule
      (`scaled_width`): `units` of `Dense`, `LSTM`, `GRU`, `SimpleRNN` (also
      inside `Bidirectional`), `filters` of every convolution, `output_dim`
      of `Embedding`, `key_dim`/`value_dim` of `MultiHeadAttention`;
      `DepthwiseConv` channels follow their input. A `Reshape` after the
      aggregation point is adapted when it keeps the channel axis last or
      uses `-1`, and refused with its name otherwise.
    - The classification head gets `n * K` outputs without activation, then
      `Deaggregate`, then the head's own activation per sample (in float32
      under mixed precision). A model with several outputs gets one such head
      per output; a model with several inputs aggregates each of them with
      the same grouping.

    `n=1` gives the original architecture with the same number of
    parameters (freshly initialised), the natural baseline. Weights are never
    copied from the backbone, except that stateful preprocessing layers are
    shared with it as they are.

    `strategy="stem"` (subclassed models, or pretrained backbones whose
    weights must be kept) aggregates the raw inputs to `n * C` channels and
    maps them back to the backbone's `C` channels with a learned projection
    (`Dense`, started as the mean of the n slots, so a replicated sample
    enters the backbone as it is). The backbone body runs unchanged and its
    layers are shared, weights included: set `model.trainable = False` before
    wrapping to freeze it. A new `n * K` head replaces the head of a
    Functional model (on its penultimate features); a subclassed model's
    whole output is taken as the features, and a new softmax head of
    `classes` units goes on top.

    Args:
        model: a built `keras.Model`: Functional or Sequential for either
            strategy, subclassed for `"stem"`.
        n: int >= 1, the number of samples aggregated per forward pass.
            Defaults to `3`.
        width: finite float > 0 or None, the hidden width multiplier
            (`"rebuild"` only). None (the default) means `sqrt(n)` rounded
            to two decimals (1.73 for n=3): hidden layers then hold about n
            times the backbone's weights, the backbone's capacity per sample
            of a group. The stem strategy keeps the backbone's widths.
        inference: the test protocol, `"replicate"` (each sample fills all n
            slots and the n outputs are averaged: a prediction depends on the
            sample alone), `"group"` (n test samples per forward pass: about
            n-fold throughput, but a prediction depends on its companions) or
            `"contextual"` (each sample among random companions from its batch,
            `draws` times, averaged). Defaults to `"replicate"`.
        shuffle: bool, permute each training batch before grouping, for
            pipelines that do not shuffle. Labels stay aligned. Defaults to
            `False`.
        repetition: float in `[0, 1)` or None, the share of training samples
            that fill all n slots of their group (MIMO-style input
            repetition). It shows the network, in training, the identical
            slots that replicate inference shows it. None (the default)
            means 0.5 with `inference="replicate"`, and 0 with the other
            protocols, for `n=1` and where the model needs several
            aggregation points (several inputs).
        batch_repetition: int >= 1 or None, how many times each training
            batch is grouped, each time with an independent permutation
            (MIMO's batch repetition): every sample sits in that many groups
            per step, at about as many times the step's cost. None (the
            default) means n (1 for `n=1`, and where the model needs several
            aggregation points). Inference is unchanged.
        objective: `"mean"`, `"slots"` or None, what the loss scores when a
            sample owns several slots in training: the mean of its slots'
            logits (`"mean"`, the default for None), or each slot's own
            prediction with the sample's label (`"slots"`, as in MIMO and
            the AgrLearn paper; `AgrLearnModel` spreads the labels, so any
            Keras loss works).

            The defaults were chosen by a study in which the plain model and
            `wrap(model, n=3)` get the same `compile` and `fit` call
            (`docs/DROPIN.md`): they reached the plain model's accuracy
            (within 0.3 points) with a lower NLL on MNIST-1D and digits, at
            2-4 x its training time (twice the forward passes per epoch,
            each about n times as costly).
        draws: int >= 1, companion sets per sample in contextual inference.
            Defaults to `4`.
        seed: int or None, seed of the permutations and companions.
        head: str, list of str or None: the name of the classification head
            layer, one per model output. By default the last `Dense` or `Conv`
            layer on the way to each output.
        aggregate_after: str or None, the name of the layer after which samples
            are aggregated (`"rebuild"` only). By default, before the first
            channel-mixing layer.
        name: str or None, the new model's name. Defaults to
            `"agrlearn_" + model.name`.
        strategy: `"rebuild"`, `"stem"` or None. None picks `"rebuild"` for
            Functional and Sequential models and `"stem"` for subclassed ones.
        classes: int or None, the number of classes of the new head when the
            stem strategy finds none in the backbone (a subclassed model, or a
            Functional one without a head). Defaults to None.
        verbose: bool, print which strategy was used and why. Defaults to
            `False`.

    Returns:
        A new, uncompiled `keras_agrlearn.AgrLearnModel` (a Functional
        `keras.Model`) taking and returning per-sample tensors.

    Raises:
        ValueError, TypeError: for an invalid argument, a model that is not
            built, a layer that cannot work on aggregated samples (named in
            the message), or a model whose classification head cannot be found.

    Example:

    >>> backbone = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(8, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> model = wrap(backbone, n=2, width=1.5)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> import numpy as np
    >>> x, y = np.random.rand(20, 8, 8, 1), np.random.randint(0, 10, 20)
    >>> history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    >>> model.predict(x, verbose=0).shape
    (20, 10)
    """
    n = _validation.check_n(n)
    default_width = width is None
    if not default_width:
        width = _validation.check_width(width)
    inference = _validation.check_inference(inference)
    default_repetition = repetition is None
    if default_repetition:
        repetition = DEFAULT_REPETITION if inference == "replicate" and n > 1 else 0.0
    repetition = _validation.check_repetition(repetition)
    default_batch_repetition = batch_repetition is None
    if default_batch_repetition:
        batch_repetition = default_batch_repetition_for(n)
    batch_repetition = _validation.check_batch_repetition(batch_repetition)
    objective = _validation.check_objective(
        DEFAULT_OBJECTIVE if objective is None else objective
    )

    def make_aggregate(repetition, batch_repetition):
        return Aggregate(
            n,
            inference=inference,
            shuffle=shuffle,
            repetition=repetition,
            batch_repetition=batch_repetition,
            draws=draws,
            seed=seed,
        )

    aggregate = make_aggregate(repetition, batch_repetition)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Functional or Sequential), "
            f"got {type(model).__name__}."
        )
    strategy, reason = _choose_strategy(model, strategy)
    if verbose:
        print(f"wrap(): strategy={strategy!r} for model '{model.name}': {reason}.")
    name = name or f"agrlearn_{model.name}"
    if default_width:
        # The stem strategy keeps the backbone body, so it cannot widen it.
        width = 1.0 if strategy == "stem" else default_width_for(n)
    if strategy == "stem":
        if width != 1.0 or aggregate_after is not None:
            raise ValueError(
                "Arguments `width` and `aggregate_after` need strategy='rebuild': "
                "the stem strategy keeps the backbone body unchanged and "
                f"aggregates its inputs; got width={width}, "
                f"aggregate_after={aggregate_after!r}."
            )
        return stem.stem_model(
            model,
            aggregate,
            inference,
            head=head,
            classes=classes,
            name=name,
            objective=objective,
        )
    if classes is not None:
        raise ValueError(
            "Argument `classes` is for strategy='stem' only: the rebuild "
            "strategy keeps the class count of the backbone's head."
        )
    try:
        return _rebuilt(
            model, aggregate, width, inference, head, aggregate_after, name, objective
        )
    except _rebuild.SeveralAggregationPointsError:
        explicit = (not default_repetition and repetition > 0) or (
            not default_batch_repetition and batch_repetition > 1
        )
        if explicit:
            raise
    # Several aggregation points share one grouping only without permutations.
    if verbose:
        print(
            "wrap(): repetition=0, batch_repetition=1 (the defaults need a "
            "single aggregation point; this model has several)."
        )
    aggregate = make_aggregate(0.0, 1)
    return _rebuilt(
        model, aggregate, width, inference, head, aggregate_after, name, objective
    )


def default_width_for(n):
    """`wrap`'s width when none is given: sqrt(n), to two decimals.

    Hidden layers hold about width**2 times the backbone's weights, so each
    of the n samples of a group gets about the backbone's own capacity.
    """
    return round(math.sqrt(n), 2)


def default_batch_repetition_for(n):
    """`wrap`'s batch repetition when none is given: n for n > 1, else 1.

    With b = n, an n-fold model makes as many forward passes per epoch
    without input repetition as the plain network.
    """
    return n if n > 1 else 1


def _choose_strategy(model, strategy):
    """The strategy to use and the reason, for the `verbose` message."""
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(
            f"Argument `strategy` must be one of {', '.join(map(repr, STRATEGIES))} "
            f"or None, got strategy={strategy!r}."
        )
    functional = _rebuild.is_functional(model)
    if strategy == "rebuild":
        return strategy, "requested"
    if strategy == "stem":
        return strategy, "requested; the backbone body and its weights are kept"
    if functional:
        return "rebuild", (
            f"{type(model).__name__} models are rebuilt layer by layer, widened "
            "and freshly initialised (strategy='stem' keeps pretrained weights)"
        )
    return "stem", (
        f"{type(model).__name__} is a subclassed model, which cannot be rebuilt "
        "layer by layer: a learned projection feeds its unchanged body"
    )


def _rebuilt(model, aggregate, width, inference, head, aggregate_after, name, objective):
    graph = _rebuild.functional_of(model)
    heads = _rebuild.find_heads(graph, head)
    after_layer = _rebuild.find_layer(graph, aggregate_after, "aggregate_after")
    builder = _rebuild.Rebuilder(
        aggregate, aggregate.n, width, inference, heads, after_layer,
        objective=objective,
    )
    new_inputs = []
    for old_input in graph.inputs:
        new_input = keras.Input(
            batch_shape=old_input.shape, dtype=old_input.dtype, name=old_input.name
        )
        builder.tag(new_input, _rebuild.SAMPLE)
        new_inputs.append(new_input)
    outputs = builder.run(graph, new_inputs)
    for output, head_layer in zip(keras.tree.flatten(outputs), heads):
        if builder.state(output) != _rebuild.PREDICTED:
            raise ValueError(
                f"The classification head '{head_layer.name}' does not lead to "
                f"the output of model '{model.name}'; pass `head=` the name of "
                "the layer that produces the class scores."
            )
    inputs = keras.tree.pack_sequence_as(graph._inputs_struct, new_inputs)
    return AgrLearnModel(inputs, outputs, name=name)
