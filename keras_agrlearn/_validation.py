"""Argument checks shared by the public layers and `wrap`.

Every check raises with a message that names the argument, the value received
and what is allowed, so a typo never turns into a shape error deep inside a
backend. One rule for the exception type: a value of the wrong type (a float
where an integer is needed, a bool where a number is) is a TypeError, a value
of the right type that is out of range or not among the choices a
ValueError. NumPy integers, floats and booleans count as Python ones.
"""

import math
import numbers

import keras
import numpy as np

# The one list of inference protocols; documentation and errors quote it.
INFERENCE_MODES = ("group", "replicate", "contextual")
OBJECTIVES = ("slots", "mean")
MIXINGS = ("sum", "cut", "linear")
# Rows of a softmax output sum to 1 up to float32 (or float16) rounding.
SUM_TOLERANCE = 1e-3


def check_n(n):
    """Returns `n` as an int, or raises if it is not an integer >= 1."""
    return _integer("n", n, "the aggregation factor")


def _positive_real(name, value, what=""):
    """Returns `value` as a float, or raises if it is not a finite number > 0."""
    label = f"Argument `{name}`{f' ({what})' if what else ''} must be a finite number > 0, got "
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label}{value!r} of type {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label}{name}={value}.")
    return value


def check_temperature(temperature):
    """Returns `temperature` as a float, or raises if it is not finite and > 0."""
    return _positive_real("temperature", temperature)


def check_width(width):
    """Returns `width` as a float, or raises if it is not a finite number > 0."""
    return _positive_real("width", width, "the width multiplier")


def check_choice(name, value, choices):
    """Returns `value`, or raises a ValueError if it is not one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {', '.join(map(repr, choices))}, "
            f"got {name}={value!r}."
        )
    return value


def check_inference(inference):
    return check_choice("inference", inference, INFERENCE_MODES)


def check_objective(objective):
    return check_choice("objective", objective, OBJECTIVES)


def check_mixing(mixing):
    return check_choice("mixing", mixing, MIXINGS)


def check_positive(name, value, meaning):
    """Returns `value` as a float, or raises if it is not a finite number > 0."""
    description = f"Argument `{name}` ({meaning}) must be a finite number > 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{description}, got {value!r} of type {type(value).__name__}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{description}, got {name}={value!r}.")
    return float(value)


def check_probability(name, value, meaning):
    """Returns `value` as a float, or raises if it is not a number in [0, 1]."""
    description = f"Argument `{name}` ({meaning}) must be a number in [0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{description}, got {value!r} of type {type(value).__name__}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{description}, got {name}={value!r}.")
    return float(value)


def check_draws(draws):
    return _integer(
        "draws",
        draws,
        "the number of random companion sets averaged in contextual inference",
    )


def check_batch_repetition(batch_repetition, n=None):
    """Returns `batch_repetition` as an int >= 1, which must be 1 when n=1."""
    batch_repetition = _integer(
        "batch_repetition",
        batch_repetition,
        "how many times each training batch is grouped, with independent permutations",
    )
    if n == 1 and batch_repetition > 1:
        raise ValueError(
            "Argument `batch_repetition` must be 1 when n=1: with one sample "
            "per group every grouping is the same, so repeating the batch "
            f"only repeats the gradient; got batch_repetition={batch_repetition}."
        )
    return batch_repetition


def check_num_bins(num_bins):
    return _integer("num_bins", num_bins, "the number of confidence bins")


def check_batch_size(batch_size):
    """Returns `batch_size` as an int >= 1, or None."""
    if batch_size is None:
        return None
    return _integer("batch_size", batch_size, "the batch size of predict, or None")


def check_bool(name, value):
    """Returns `value` as a bool, or raises a TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"Argument `{name}` must be True or False, got {value!r} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def check_seed(seed):
    """Returns `seed` as an int, or None; raises a TypeError for anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"Argument `seed` must be an integer or None, got {seed!r} of type "
            f"{type(seed).__name__}."
        )
    return int(seed)


def check_epsilon(epsilon):
    """Returns `epsilon` as a float, or raises if it is not a finite number > 0."""
    description = "Argument `epsilon` (the smallest probability used) must be a finite number > 0"
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"{description}, got {epsilon!r} of type {type(epsilon).__name__}.")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"{description}, got epsilon={epsilon!r}.")
    return float(epsilon)


def check_classes(classes):
    return _integer("classes", classes, "the number of classes of the new head")


def check_repetition(repetition):
    description = (
        "Argument `repetition` (the share of training samples shown in all n "
        "slots of their group) must be a number in [0, 1)"
    )
    if isinstance(repetition, bool) or not isinstance(repetition, numbers.Real):
        raise TypeError(f"{description}, got {repetition!r} of type {type(repetition).__name__}.")
    if not 0.0 <= float(repetition) < 1.0:
        raise ValueError(f"{description}, got repetition={repetition!r}.")
    return float(repetition)


def check_model(model):
    """Raises a TypeError unless `model` is a `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Functional, Sequential or "
            f"subclassed), got {type(model).__name__}."
        )
    return model


def _integer(name, value, meaning, minimum=1):
    """`value` as an int: TypeError for a non-integer, ValueError below `minimum`."""
    description = f"Argument `{name}` ({meaning}) must be an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{description}, got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{description}, got {name}={value}.")
    return int(value)


def check_axis_type(axis, name="axis"):
    """Returns `axis` as an int, or raises a TypeError if it is not an integer."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"Argument `{name}` must be an integer, got {axis!r}.")
    return int(axis)


def check_axis(axis, rank, name="axis"):
    """Returns the positive feature axis for a tensor of `rank`, never the batch axis."""
    check_axis_type(axis, name)
    if rank < 2:
        raise ValueError(
            f"Aggregation needs inputs of rank >= 2 (batch, features...), got rank {rank}."
        )
    positive = axis + rank if axis < 0 else axis
    if not 1 <= positive < rank:
        raise ValueError(
            f"Argument `{name}` must address a non-batch axis of the rank-{rank} "
            f"input: one of {list(range(1, rank))} or {list(range(-rank + 1, 0))}, "
            f"got {name}={axis}."
        )
    return positive


def check_labels(y, classes, name="y"):
    """Integer labels `(N,)` in `[0, classes)`, from integer or one-hot `y`."""
    if y.ndim == 2 and y.shape[1] == classes:
        if (
            not np.all(np.isfinite(y))
            or np.min(y) < 0
            or np.max(np.abs(np.sum(y, axis=1) - 1.0)) > SUM_TOLERANCE
        ):
            raise ValueError(
                f"Argument `{name}`: one-hot labels of shape {y.shape} must be "
                "non-negative rows that sum to 1."
            )
        return np.argmax(y, axis=1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must hold integer labels (N,) or (N, 1) or one-hot "
            f"labels (N, {classes}), got shape {y.shape}."
        )
    if y.dtype.kind not in "iub":
        if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(
                f"Argument `{name}` must hold integer class labels, got {y.dtype} "
                f"values such as {y[:3].tolist()}."
            )
    bad = (y < 0) | (y >= classes)
    if np.any(bad):
        raise ValueError(
            f"Argument `{name}`: labels must be integers in [0, {classes}) for a "
            f"model with {classes} classes, got {y[bad][:3].tolist()} "
            f"({int(np.sum(bad))} out of range)."
        )
    return y.astype("int64")
