"""Argument checks shared by the public layers and `wrap`.

Every check raises with a message that names the argument, the value received
and what is allowed, so a typo never turns into a shape error deep inside a
backend.
"""

import math
import numbers

INFERENCE_MODES = ("group", "replicate", "contextual")
OBJECTIVES = ("slots", "mean")


def check_n(n):
    """Returns `n` as an int, or raises if it is not an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(
            "Argument `n` (the aggregation factor) must be an integer >= 1, "
            f"got {n!r} of type {type(n).__name__}."
        )
    if n < 1:
        raise ValueError(
            "Argument `n` (the aggregation factor) must be an integer >= 1, "
            f"got n={n}."
        )
    return int(n)


def check_width(width):
    """Returns `width` as a float, or raises if it is not a finite number > 0."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(
            "Argument `width` (the width multiplier) must be a finite number "
            f"> 0, got {width!r} of type {type(width).__name__}."
        )
    width = float(width)
    if not math.isfinite(width) or width <= 0:
        raise ValueError(
            "Argument `width` (the width multiplier) must be a finite number "
            f"> 0, got width={width}."
        )
    return width


def check_inference(inference, allowed=INFERENCE_MODES):
    if inference not in allowed:
        raise ValueError(
            f"Argument `inference` must be one of {', '.join(map(repr, allowed))}, "
            f"got inference={inference!r}."
        )
    return inference


def check_objective(objective):
    if objective not in OBJECTIVES:
        raise ValueError(
            f"Argument `objective` must be one of {', '.join(map(repr, OBJECTIVES))}, "
            f"got objective={objective!r}."
        )
    return objective


def check_draws(draws):
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral) or draws < 1:
        raise ValueError(
            "Argument `draws` (the number of random companion sets averaged in "
            f"contextual inference) must be an integer >= 1, got {draws!r}."
        )
    return int(draws)


def check_batch_repetition(batch_repetition):
    """Returns `batch_repetition` as an int, or raises if it is not an integer >= 1."""
    if (
        isinstance(batch_repetition, bool)
        or not isinstance(batch_repetition, numbers.Integral)
        or batch_repetition < 1
    ):
        raise ValueError(
            "Argument `batch_repetition` (how many times each training batch is "
            "grouped, with independent permutations) must be an integer >= 1, "
            f"got {batch_repetition!r}."
        )
    return int(batch_repetition)


def check_repetition(repetition):
    if (
        isinstance(repetition, bool)
        or not isinstance(repetition, numbers.Real)
        or not 0.0 <= float(repetition) < 1.0
    ):
        raise ValueError(
            "Argument `repetition` (the share of training samples shown in all n "
            f"slots of their group) must be a number in [0, 1), got {repetition!r}."
        )
    return float(repetition)


def check_axis(axis, rank, name="axis"):
    """Returns the positive feature axis for a tensor of `rank`, never the batch axis."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"Argument `{name}` must be an integer, got {axis!r}.")
    if rank < 2:
        raise ValueError(
            f"Aggregation needs inputs of rank >= 2 (batch, features...), got "
            f"rank {rank}."
        )
    positive = axis + rank if axis < 0 else axis
    if not 1 <= positive < rank:
        raise ValueError(
            f"Argument `{name}` must address a non-batch axis of the rank-{rank} "
            f"input: one of {list(range(1, rank))} or {list(range(-rank + 1, 0))}, "
            f"got {name}={axis}."
        )
    return positive
