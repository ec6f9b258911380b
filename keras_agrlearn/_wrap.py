"""`wrap`: turn a Keras classifier into an AgrLearn model.

`wrap` validates its arguments, settles every default, chooses a strategy
and hands over to it: `_rebuild.py` replays a layer graph, widened;
`_stem.py` keeps a backbone's body and aggregates in front of it.
"""

from keras_agrlearn import _defaults
from keras_agrlearn import _graph
from keras_agrlearn import _head
from keras_agrlearn import _keras_internals
from keras_agrlearn import _rebuild
from keras_agrlearn import _settings
from keras_agrlearn import _stem
from keras_agrlearn import _validation
from keras_agrlearn._aggregate import Aggregate
from keras_agrlearn._deaggregate import Deaggregate
from keras_agrlearn._model import AgrLearnModel

STRATEGIES = ("rebuild", "stem")
_KEPT = "requested; the backbone body and its weights are kept"


def wrap(
    model,
    n=_defaults.N,
    *,
    width=_defaults.WIDTH,
    inference=_defaults.INFERENCE,
    shuffle=False,
    repetition=None,
    batch_repetition=None,
    objective=None,
    mixing=_defaults.MIXING,
    mixing_alpha=_defaults.MIXING_ALPHA,
    mixing_prob=_defaults.MIXING_PROB,
    mixing_root=_defaults.MIXING_ROOT,
    draws=4,
    seed=None,
    head=None,
    aggregate_after=None,
    name=None,
    strategy=None,
    classes=None,
    data_format=None,
    verbose=False,
):
    """Turns a Keras classifier into an Aggregated Learning model.

    The result is a new `keras.Model` with the same per-sample inputs and
    outputs as `model`, under the same names and in the same structure (a
    dict, a list or a single tensor), so every Keras loss, metric, callback
    and data pipeline works unchanged, `compile(loss={...})` keyed by output
    name included. Two strategies build it:

    `strategy="rebuild"` (Functional and Sequential models, nested models
    included, and subclassed models whose `call` can be traced on a symbolic
    input) replays the backbone layer by layer:

    - `Aggregate` goes before the first layer that mixes channels; per-sample
      preprocessing (`Rescaling`, `Normalization`, `TextVectorization`,
      reshapes, `Embedding`, ...) stays per sample and keeps its state, and
      so do layers without weights that `wrap` does not know (a `Lambda`,
      a custom layer): they run per sample exactly as in the backbone. Token
      ids are therefore aggregated after their embedding, along the feature
      axis. Masks (`mask_zero=True`) stop at the aggregation point.
    - After the aggregation point, a layer sees n samples stacked along its
      channel axis. Keras' own layers are known to cope; a `Lambda`, a
      Keras layer wrapping foreign code (`TFSMLayer`, `JaxLayer`, ...) or a
      custom layer could slice or count channels, so `wrap` refuses it by
      name rather than guess; move the aggregation point past it
      (`aggregate_after=`), use `strategy="stem"`, or, for a custom layer
      that treats every channel alike or mixes them all, declare it with the
      class attribute `supports_aggregation = True`.
    - Hidden widths are multiplied by `width` with one rounding rule
      (`scaled_width`): `units` of `Dense`, `LSTM`, `GRU`, `SimpleRNN` (also
      inside `Bidirectional`), `filters` of every convolution, `output_dim`
      of `Embedding`, `key_dim`/`value_dim` of `MultiHeadAttention`;
      `DepthwiseConv` channels follow their input. A `Reshape` after the
      aggregation point is adapted when it keeps the channel axis last or
      uses `-1`, and refused with its name otherwise.
    - The classification head gets `n * K` outputs without activation, then
      `Deaggregate`, then the head's own activation per sample (in float32
      under mixed precision). The `n * K` layer is named after the head with
      `_slots` appended; the last per-sample layer takes the head's name, so
      the model's outputs keep theirs (an output of a nested model passes
      through an `Identity` layer named after it). A model with several
      outputs gets one such head per output; a model with several inputs
      aggregates each of them with the same grouping.

    `n=1` gives the original architecture with the same number of
    parameters, the natural baseline. Stateful preprocessing layers are
    shared with the backbone as they are. Other weights are kept only with
    `width=1.0` (the default): weights whose shape is unchanged are copied; the first
    channel-mixing layer (`Dense` or `Conv`, now with n*C input channels)
    starts from the pretrained kernel tiled n times along its input channels
    and divided by n, so a sample replicated in all n slots gives the
    original pre-activation; the `n * K` head starts from the pretrained
    kernel and bias tiled n times, each slot as the pretrained head. With
    `n=1`, or `inference="replicate"`, the wrapped model then predicts as the
    backbone until trained. Weights that cannot be kept are freshly
    initialised, and when the backbone looks pretrained (its optimizer has
    taken a step, or a weight with a constant initializer, such as a bias or
    a `BatchNormalization` statistic, no longer holds that constant) `wrap`
    warns and names `strategy="stem"`.

    Training it: give it the augmentation you give the plain model and a
    longer schedule. In the regime study (docs/REGIME.md), where every method
    searched its learning rate, weight decay and length under one FLOP cap,
    the one configuration that beat the tuned, augmented plain model of the
    same cost was these defaults with augmentation, trained for 3 x the plain
    model's training FLOPs (3.9 x its epochs, since input repetition makes an
    epoch cheaper), on 320 samples; with enough data the tuned plain model was
    as good or better. `keras_agrlearn.calibrate_temperature` tempers either.

    `strategy="stem"` (subclassed models that cannot be traced or have no head
    of their own, or pretrained backbones whose weights must be kept)
    aggregates the raw inputs to `n * C` channels and maps them back to the
    backbone's `C` channels with a learned projection (`Dense`, or a 1x1
    convolution for channels-first data, started as the mean of the n slots,
    so a replicated sample enters the backbone as it is). The backbone body
    runs unchanged and its layers are shared, weights included: set
    `model.trainable = False` before wrapping to freeze it. A new `n * K` head
    replaces the head of a Functional model (on its penultimate features); a
    subclassed model's whole output is taken as the features, and a new
    softmax head of `classes` units goes on top.

    Args:
        model: a built `keras.Model`: Functional, Sequential or subclassed,
            and not itself an AgrLearn model.
        n: int >= 1, the number of samples aggregated per forward pass.
            Defaults to `2`.
        width: finite float > 0, the hidden width multiplier (`"rebuild"`
            only; the stem strategy keeps the backbone's widths). Defaults to
            `1.0`, the backbone's own widths. A width w makes each pass cost
            about w² as much: spending that on the plain model instead
            (wider, or trained longer) did as well or better in every
            configuration measured (docs/RESULTS.md).
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
            default) means 1. Inference is unchanged.
        objective: `"mean"`, `"slots"` or None, what the loss scores when a
            sample owns several slots in training: the mean of its slots'
            logits (`"mean"`, the default for None), or each slot's own
            prediction with the sample's label (`"slots"`, as in MIMO and
            the AgrLearn paper; `AgrLearnModel` spreads the labels, so any
            Keras loss works).

        mixing: `"sum"`, `"cut"` or `"linear"`, how the first channel-mixing
            layer combines the n samples' features in training. `"sum"` (the
            default) is a layer over the n*C concatenated channels, which
            sums n per-slot encoders' features (MIMO, AgrLearn). `"cut"` and
            `"linear"` make that layer a `MixedEncoders` layer of n per-slot
            encoders (the same FLOPs) whose features are mixed in training
            as in MixMo (Rame et al., 2021): `"cut"` by a box mask over the
            feature positions with probability `mixing_prob`, linearly
            otherwise; `"linear"` always linearly. Inference (and
            `inference="group"`) sums them, as with `"sum"`. With
            `objective="slots"`, each slot's loss is weighted by its share
            of the mix. The first layer after the aggregation point must be
            a `Dense` or `Conv` layer; with the stem strategy the stem's
            per-slot projections are mixed. docs/MIMO.md maps MixMo's
            settings to these.
        mixing_alpha: finite float > 0, the concentration of the mixing
            ratios (`Beta(alpha, alpha)` for n=2, Dirichlet for n > 2).
            Defaults to `2.0`, MixMo's.
        mixing_prob: float in `[0, 1]`, the probability of the cut mask per
            group with `mixing="cut"`. Defaults to `0.5`, MixMo's; the
            `keras_agrlearn.MixingDecay` callback lowers it to 0 over the
            last twelfth of training, as MixMo does.
        mixing_root: finite float > 0, the root r of the slot loss weights
            `w(kappa) = n kappa^(1/r) / sum_s kappa_s^(1/r)`. Defaults to
            `3.0`, MixMo's.

            The defaults of `n`, `width`, `inference`, `repetition`,
            `batch_repetition` and `objective` are the setting the
            compute-fair study chose (docs/PROTOCOL.md); `docs/RESULTS.md`
            gives its figures, with intervals, against the plain model given
            the same compute.
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
            Functional and Sequential models and for subclassed ones whose
            `call` traces to a graph ending in a head, and `"stem"` otherwise
            (`verbose=True` says why).
        classes: int or None, the number of classes of a new head on a
            subclassed backbone without one (stem strategy). Defaults to None.
        data_format: `"channels_last"`, `"channels_first"` or None: where the
            stem strategy finds the input's channels. None means the last
            axis for inputs of rank 2 and `keras.config.image_data_format()`
            otherwise.
        verbose: bool, print which strategy was used and why. Defaults to
            `False`.

    Returns:
        A new, uncompiled `keras_agrlearn.AgrLearnModel` (a Functional
        `keras.Model`) taking and returning per-sample tensors.

    Raises:
        ValueError, TypeError: for an invalid argument, a model that is not
            built or is already an AgrLearn model, a layer that cannot work
            on aggregated samples or whose effect on channels is unknown
            (named in the message, with the options), or a model whose
            classification head cannot be found.

    Warns:
        UserWarning: when the rebuild strategy re-initialises weights of a
            backbone that looks pretrained (see above); the message names the
            layers and `strategy="stem"`.

    Example:

    >>> import keras
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
    _validation.check_model(model)
    _check_not_agrlearn(model)
    n = _validation.check_n(n)
    width = _validation.check_width(width)
    inference = _validation.check_inference(inference)
    objective = _validation.check_objective(_defaults.OBJECTIVE if objective is None else objective)
    draws = _validation.check_draws(draws)
    mixing = _validation.check_mixing(mixing)
    mixing_alpha = _validation.check_positive(
        "mixing_alpha", mixing_alpha, "the concentration of the mixing ratios"
    )
    mixing_prob = _validation.check_probability(
        "mixing_prob", mixing_prob, "the probability of a cut mask"
    )
    mixing_root = _validation.check_positive(
        "mixing_root", mixing_root, "the root of the slot loss weights"
    )
    shuffle = _validation.check_bool("shuffle", shuffle)
    seed = _validation.check_seed(seed)
    if repetition is not None:
        repetition = _validation.check_repetition(repetition)
    if batch_repetition is not None:
        batch_repetition = _validation.check_batch_repetition(batch_repetition, n)
    strategy, backbone, reason, untraced = _choose_strategy(model, strategy, classes)
    if strategy == "stem":
        if width != 1.0 or aggregate_after is not None:
            raise ValueError(
                "Arguments `width` and `aggregate_after` need strategy='rebuild': "
                "the stem strategy keeps the backbone body unchanged and "
                f"aggregates its inputs; got width={width}, "
                f"aggregate_after={aggregate_after!r}."
            )
        points = 1
    else:
        if classes is not None:
            raise ValueError(
                "Argument `classes` is for strategy='stem' only: the rebuild "
                "strategy keeps the class count of the backbone's head."
            )
        if data_format is not None:
            raise ValueError(
                "Argument `data_format` is for strategy='stem' only: the rebuild "
                "strategy reads each layer's own `data_format`."
            )
        points = len(_rebuild.aggregation_axes(backbone, head, aggregate_after))
        if points > 1 and mixing != "sum" and n > 1:
            raise ValueError(
                f"Argument `mixing`: mixing={mixing!r} needs a single aggregation "
                f"point, but this model aggregates at {points} (several inputs). "
                "Use `aggregate_after=` to choose one, or mixing='sum'."
            )
    repetition, batch_repetition = _training_layout(
        n, inference, shuffle, repetition, batch_repetition, points
    )
    settings = _settings.Settings(
        n=n,
        width=width,
        inference=inference,
        shuffle=shuffle,
        repetition=repetition,
        batch_repetition=batch_repetition,
        objective=objective,
        mixing=mixing,
        mixing_alpha=mixing_alpha,
        mixing_prob=mixing_prob,
        mixing_root=mixing_root,
        draws=draws,
        seed=seed,
    )
    name = name or f"agrlearn_{model.name}"
    if verbose:
        print(
            f"wrap(): strategy={strategy!r} for model '{model.name}': {reason}; "
            f"repetition={repetition}, batch_repetition={batch_repetition}."
        )
    if strategy == "stem":
        return _stem.stem_model(
            backbone,
            settings,
            head=head,
            classes=classes,
            name=name,
            data_format=data_format,
            untraced=untraced,
        )
    return _rebuild.rebuild_model(
        backbone,
        settings,
        head=head,
        aggregate_after=aggregate_after,
        name=name,
        source=model,
    )


def _check_not_agrlearn(model):
    """Refuses a model that already aggregates: `wrap` takes the plain classifier."""
    found = [
        f"'{layer.name}' ({type(layer).__name__})"
        for layer in _keras_internals.sublayers(model)
        if isinstance(layer, (Aggregate, Deaggregate))
    ]
    if isinstance(model, AgrLearnModel) or found:
        holds = f" (it holds {', '.join(found)})" if found else ""
        raise ValueError(
            f"Argument `model`: model '{model.name}' is already an AgrLearn "
            f"model{holds}. wrap() takes the plain classifier: wrap the "
            "backbone it was built from, with the `n` and options you want."
        )


def _training_layout(n, inference, shuffle, repetition, batch_repetition, points):
    """Settles `repetition` and `batch_repetition` (None: the defaults).

    Several aggregation points (several inputs) share one grouping only
    without random permutations, so there the defaults are 0 and 1 and
    explicit permutations are refused.
    """
    if points > 1:
        permutes = (
            shuffle
            or inference == "contextual"
            or (repetition or 0.0) > 0
            or (batch_repetition or 1) > 1
        )
        if permutes:
            raise ValueError(
                "This model needs aggregation at more than one place; that is "
                "supported only without `shuffle`, `repetition`, "
                "`batch_repetition` > 1 or contextual inference. Use "
                "`aggregate_after=` to choose a single aggregation point."
            )
        return 0.0, 1
    if repetition is None:
        repetition = _defaults.repetition_for(n, inference)
    if batch_repetition is None:
        batch_repetition = _defaults.BATCH_REPETITION
    return repetition, batch_repetition


def _choose_strategy(model, strategy, classes):
    """The strategy, the model it applies to, the reason (for `verbose`), and
    why a subclassed model was not rebuilt (None otherwise).

    A subclassed model is traced (see `_graph.trace`): when its `call` gives
    a graph that ends in a classification head, that graph is rebuilt.
    """
    _validation.check_choice("strategy", strategy, STRATEGIES + (None,))
    if _keras_internals.is_functional(model):
        if strategy == "stem":
            return strategy, model, _KEPT, None
        return (
            "rebuild",
            model,
            (
                "requested"
                if strategy
                else f"{type(model).__name__} models are rebuilt layer by layer, widened; "
                "weights are kept only at width=1.0 (strategy='stem' keeps "
                "pretrained weights)"
            ),
            None,
        )
    if strategy == "stem":
        return strategy, model, _KEPT, None
    if classes is not None and strategy is None:
        return (
            "stem",
            model,
            ("`classes=` asks for a new head on the subclassed model's output"),
            None,
        )
    graph, problem = _graph.trace(model)
    if graph is not None:
        problem = _head.head_problem(graph)
    if problem is None:
        return (
            "rebuild",
            graph,
            (
                f"the call of subclassed model {type(model).__name__} was traced to "
                "a layer graph, which is rebuilt layer by layer and widened "
                "(weights are kept only at width=1.0)"
            ),
            None,
        )
    if strategy == "rebuild":
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed "
            f"model that cannot be rebuilt layer by layer: {problem}"
        )
    return (
        "stem",
        model,
        (
            f"{type(model).__name__} is a subclassed model that cannot be rebuilt "
            f"layer by layer ({problem}): a learned projection feeds its "
            "unchanged body"
        ),
        problem,
    )
