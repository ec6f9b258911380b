"""Slot layout shared by `Aggregate` and `Deaggregate`.

A batch of B samples is laid out in *slots*: a flat list of G*n rows, each a
copy of one input sample, read as G groups of n consecutive slots. `Aggregate`
fills the slots (a gather by `sources`) and concatenates each group's n slots
along the feature axis; `Deaggregate` splits the n*K outputs back into slots
and reads each sample's prediction from the slots listed in `readout` (averaged
when a sample owns several). Every inference protocol is a choice of `sources`
and `readout`; the common cases skip the gathers and use reshapes only.

`layout` is the one place that decides, per mode (`"training"`, `"group"`,
`"replicate"`, `"contextual"`), which of the three layouts a call uses;
`Aggregate` and `Deaggregate` both follow it, and `grouped_batch` gives the
number of groups it makes, so their static output shapes agree with `call`.

`remember` and `aggregates_of` pair the two layers: `Aggregate` remembers the
tensors it takes in and the readouts it makes, and `Deaggregate` looks up the
`Aggregate` behind the `reference` or `readout` it receives, to check that
their settings agree before any wrong row can come out.

Batch sizes are Python ints when the backend knows them while tracing (JAX,
PyTorch, TensorFlow with a fixed signature) and scalar tensors otherwise, so
the arithmetic below sticks to operators that both support.
"""

import weakref

import keras
from keras import ops
from keras import random

# The three layouts. TILE: each sample fills all n slots of its own group, and
# owns them all (replicate inference). CONSECUTIVE: groups of n consecutive
# samples, a last partial group completed cyclically; sample i owns slot i.
# GATHER: slots filled by an explicit, usually random, `sources` gather; only
# the `readout` that goes with it tells which slots a sample owns.
TILE, CONSECUTIVE, GATHER = "tile", "consecutive", "gather"


def mode_of(training, inference):
    """The mode of a call: `"training"`, or the inference protocol."""
    return "training" if training else inference


def modes(training, inference):
    """The modes a call may run in: both training and `inference` when
    `training` is None (a symbolic call builds for either)."""
    if training is None:
        return ("training", inference)
    return (mode_of(training, inference),)


def layout(mode, permutes_in_training=False):
    """The layout a call in `mode` uses (see TILE, CONSECUTIVE, GATHER).

    `permutes_in_training` is True for an `Aggregate` that permutes or repeats
    training samples (shuffle, input repetition, batch repetition).
    """
    if mode == "replicate":
        return TILE
    if mode == "contextual" or (mode == "training" and permutes_in_training):
        return GATHER
    return CONSECUTIVE


def repeated_count(batch, repetition):
    """How many of `batch` samples fill all n slots of a group of their own."""
    if isinstance(batch, int):
        return int(repetition * batch + 0.5)
    return ops.cast(ops.floor(repetition * ops.cast(batch, "float32") + 0.5), "int32")


def grouped_batch(batch, n, mode, repetition=0.0, batch_repetition=1, draws=1):
    """The number of groups (rows) `Aggregate` makes of `batch` samples in `mode`.

    Returns None when `batch` is None (not known statically).
    """
    if batch is None:
        return None
    if mode == "replicate":
        return batch
    if mode == "contextual":
        return draws * batch
    if mode != "training":
        return num_groups(batch, n)
    repeated = repeated_count(batch, repetition)
    return batch_repetition * (num_groups(batch - repeated, n) + repeated)


def batch_size(x):
    static = x.shape[0]
    return static if static is not None else ops.shape(x)[0]


def num_groups(batch, n):
    return (batch + n - 1) // n


def slots_to_groups(x, n, axis):
    """(G*n, ..., C, ...) -> (G, ..., n*C, ...), slot s at [s*C, (s+1)*C) of `axis`."""
    if n == 1:
        return x
    shape = list(ops.shape(x))[1:]
    x = ops.reshape(x, [-1, n] + shape)
    if axis > 1:
        x = ops.moveaxis(x, 1, axis)
    merged = shape[axis - 1] * n
    return ops.reshape(x, [-1] + shape[: axis - 1] + [merged] + shape[axis:])


def channels_first_memory(rank, axis):
    """True where aggregation writes its output channels-first in memory.

    Keras' PyTorch convolutions and pooling move channels-last inputs to
    channels-first and copy them there (`.contiguous()`) unless they already lie
    that way. Aggregation copies its input anyway, so on PyTorch it writes the
    aggregated tensor in that order and returns the channels-last view of it:
    the first layer then skips one copy, and a gather goes straight into the
    output, with no intermediate slot tensor (one aggregated tensor in memory,
    not two). Values are the same on every backend; only the memory order
    differs.
    """
    return keras.backend.backend() == "torch" and rank >= 3 and axis == rank - 1


def to_groups(x, n, axis, sources=None):
    """(B, ..., C, ...) -> (G, ..., n*C, ...): slots filled by `sources` (or the
    B samples in order when None), then grouped by `slots_to_groups`."""
    if n > 1 and channels_first_memory(len(x.shape), axis):
        shape = list(ops.shape(x))
        x = ops.moveaxis(x, -1, 1)
        if sources is not None:
            x = ops.take(x, sources, axis=0)
        x = ops.reshape(x, [-1, n * shape[-1]] + shape[1:-1])
        return ops.moveaxis(x, 1, -1)
    if sources is not None:
        x = ops.take(x, sources, axis=0)
    return slots_to_groups(x, n, axis)


def tile_groups(x, n, axis):
    """(B, ..., C, ...) -> (B, ..., n*C, ...): each sample fills all n slots."""
    rank = len(x.shape)
    reps = [1] * rank
    if channels_first_memory(rank, axis):
        reps[1] = n
        return ops.moveaxis(ops.tile(ops.moveaxis(x, -1, 1), reps), 1, -1)
    reps[axis] = n
    return ops.tile(x, reps)


def groups_to_slots(y, n, axis):
    """(G, ..., n*K, ...) -> (G*n, ..., K, ...), the exact inverse of `slots_to_groups`."""
    if n == 1:
        return y
    shape = list(ops.shape(y))[1:]
    k = shape[axis - 1] // n
    y = ops.reshape(y, [-1] + shape[: axis - 1] + [n, k] + shape[axis:])
    if axis > 1:
        y = ops.moveaxis(y, axis, 1)
    return ops.reshape(y, [-1] + shape[: axis - 1] + [k] + shape[axis:])


def cyclic(count, batch):
    """Indices 0..count-1 wrapped into [0, batch): fills a last, partial group."""
    return ops.mod(ops.arange(count, dtype="int32"), ops.cast(batch, "int32"))


def group_plan(batch, n, seed_generator=None):
    """Consecutive groups, optionally after a random permutation of the batch.

    Returns `(sources, readout)`: `readout` is None when sample i simply owns
    slot i (no permutation).
    """
    count = num_groups(batch, n) * n
    if seed_generator is None:
        return cyclic(count, batch), None
    order = random.shuffle(ops.arange(batch, dtype="int32"), seed=seed_generator)
    sources = ops.take(order, cyclic(count, batch), axis=0)
    readout = ops.expand_dims(ops.cast(ops.argsort(order), "int32"), 1)
    return sources, readout


def replicate_readout(batch, n):
    """Each sample fills all n slots of its own group and owns all of them."""
    return ops.reshape(ops.arange(batch * n, dtype="int32"), (-1, n))


def contextual_plan(batch, n, draws, seed_generator):
    """`draws` groups per sample: the sample in a random slot, random companions.

    Companions are drawn uniformly from the same batch; the sample owns the one
    slot it was placed in, in each of its `draws` groups.
    """
    companions = random.randint((draws, batch, n), 0, batch, seed=seed_generator, dtype="int32")
    own_slot = random.randint((draws, batch, 1), 0, n, seed=seed_generator, dtype="int32")
    slot_index = ops.reshape(ops.arange(n, dtype="int32"), (1, 1, n))
    own = ops.reshape(ops.arange(batch, dtype="int32"), (1, -1, 1))
    sources = ops.where(ops.equal(slot_index, own_slot), own, companions)
    group_index = ops.reshape(ops.arange(draws * batch, dtype="int32"), (draws, -1, 1))
    readout = ops.transpose(ops.squeeze(group_index * n + own_slot, -1))
    return ops.reshape(sources, (-1,)), readout


def repetition_plan(batch, n, repeated, seed_generator):
    """A random `repeated` samples fill all n slots of a group of their own.

    The others are grouped as usual. Each sample owns n readout positions:
    repeated samples their n slots, the others their one slot n times, so the
    readout is a dense (B, n) matrix.
    """
    order = random.shuffle(ops.arange(batch, dtype="int32"), seed=seed_generator)
    rest = batch - repeated
    grouped_count = num_groups(rest, n) * n
    grouped = ops.take(order[repeated:], cyclic(grouped_count, rest), axis=0)
    sources = ops.concatenate([grouped, ops.repeat(order[:repeated], n)], axis=0)
    repeated_slots = grouped_count + ops.reshape(ops.arange(repeated * n, dtype="int32"), (-1, n))
    grouped_slots = ops.repeat(ops.expand_dims(ops.arange(rest, dtype="int32"), 1), n, axis=1)
    by_position = ops.concatenate([repeated_slots, grouped_slots], axis=0)
    readout = ops.take(by_position, ops.argsort(order), axis=0)
    return sources, ops.cast(readout, "int32")


# id(tensor) -> (weak reference to the tensor, the Aggregate layers it went
# through). Keyed by id because backend tensors overload `==`; the weak
# reference drops the entry when the tensor goes, so ids are never confused.
_AGGREGATES = {}


def remember(tensor, aggregate):
    """Records that `aggregate` took `tensor` in or made it (its readout)."""
    key = id(tensor)
    entry = _AGGREGATES.get(key)
    if entry is None or entry[0]() is not tensor:
        entry = (weakref.ref(tensor, lambda ref: _forget(key, ref)), [])
        _AGGREGATES[key] = entry
    if not any(known is aggregate for known in entry[1]):
        entry[1].append(aggregate)


def _forget(key, ref):
    entry = _AGGREGATES.get(key)
    if entry is not None and entry[0] is ref:
        del _AGGREGATES[key]


def aggregates_of(tensor):
    """The `Aggregate` layers that took `tensor` in or made it; [] if unknown."""
    entry = _AGGREGATES.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return []
    return list(entry[1])
