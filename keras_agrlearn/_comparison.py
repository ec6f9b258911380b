"""`paired_comparison`: an aggregated model against the plain one, over paired seeds."""

import math
import numbers

import numpy as np

VERDICTS = ("aggregation helps", "no difference shown", "plain is better")
# The 97.5 % quantiles of Student's t with 1 to 30 degrees of freedom.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.04523, 2.042272,
)  # fmt: skip
_Z975 = 1.959963984540054
# Whether a larger value is better, per metric compared.
_HIGHER_IS_BETTER = {"accuracy": True, "nll": False}


def paired_comparison(plain, aggregated):
    """Paired differences, their 95 % intervals and a verdict.

    Seed `i` of `plain` and of `aggregated` are a pair: trained with the
    same seed (data order, initialisation draws) and scored on the same
    held-out data. For each metric the difference `aggregated - plain` is
    taken per pair; its mean comes with the 95 % t interval over the K
    pairs, `mean +- t(0.975, K - 1) * sd / sqrt(K)`.

    The verdict reads the two intervals, accuracy (higher is better) and
    NLL (lower is better): `"aggregation helps"` when one of them shows the
    aggregated model better (the whole interval on its side of zero) and
    neither shows it worse; `"plain is better"` the other way round;
    `"no difference shown"` otherwise, also when the two disagree.

    Args:
        plain: a dict with the keys `"accuracy"` and `"nll"`, each a
            sequence of K >= 2 finite numbers, one per seed (the plain
            model's scores; tempered NLL is the fair one to pass).
        aggregated: the same for the aggregated model, in the same seed
            order.

    Returns:
        A dict: for `"accuracy"` and `"nll"` a dict with `"difference"`
        (the mean paired difference, aggregated minus plain), `"low"` and
        `"high"` (its 95 % interval), `"plain"` and `"aggregated"` (the
        means); `"seeds"`, K; and `"verdict"`, one of `"aggregation helps"`,
        `"no difference shown"` and `"plain is better"`.

    Raises:
        TypeError: if `plain` or `aggregated` is not a dict.
        ValueError: if either lacks `"accuracy"` or `"nll"`, if the
            sequences are not all of one length K >= 2, or hold values that
            are not finite numbers.

    Example:

    >>> plain = {"accuracy": [0.80, 0.81, 0.79], "nll": [0.60, 0.58, 0.62]}
    >>> aggregated = {"accuracy": [0.83, 0.84, 0.83], "nll": [0.55, 0.54, 0.57]}
    >>> result = paired_comparison(plain, aggregated)
    >>> result["verdict"]
    'aggregation helps'
    >>> accuracy = result["accuracy"]
    >>> round(accuracy["difference"], 3)
    0.033
    """
    scores = {}
    for name, value in (("plain", plain), ("aggregated", aggregated)):
        if not isinstance(value, dict):
            raise TypeError(
                f"Argument `{name}` must be a dict of per-seed scores with the keys "
                f"{sorted(_HIGHER_IS_BETTER)}, got {type(value).__name__}."
            )
        missing = sorted(set(_HIGHER_IS_BETTER) - set(value))
        if missing:
            raise ValueError(
                f"Argument `{name}` lacks the keys {missing}; it needs per-seed "
                f"scores for {sorted(_HIGHER_IS_BETTER)}."
            )
        scores[name] = {m: _values(name, m, value[m]) for m in _HIGHER_IS_BETTER}
    lengths = {len(v) for side in scores.values() for v in side.values()}
    if len(lengths) != 1:
        raise ValueError(
            "Arguments `plain` and `aggregated` must hold one score per seed, "
            f"the same seeds for both metrics, got lengths {sorted(lengths)}."
        )
    seeds = lengths.pop()
    if seeds < 2:
        raise ValueError(
            f"Arguments `plain` and `aggregated` hold {seeds} seed; an interval "
            "over seeds needs at least 2."
        )
    result = {}
    better = worse = False
    for metric, higher in _HIGHER_IS_BETTER.items():
        differences = scores["aggregated"][metric] - scores["plain"][metric]
        mean = float(np.mean(differences))
        half = t_quantile(seeds - 1) * float(np.std(differences, ddof=1)) / math.sqrt(seeds)
        low, high = mean - half, mean + half
        result[metric] = {
            "difference": mean,
            "low": low,
            "high": high,
            "plain": float(np.mean(scores["plain"][metric])),
            "aggregated": float(np.mean(scores["aggregated"][metric])),
        }
        better |= low > 0 if higher else high < 0
        worse |= high < 0 if higher else low > 0
    result["seeds"] = seeds
    if better and not worse:
        result["verdict"] = VERDICTS[0]
    elif worse and not better:
        result["verdict"] = VERDICTS[2]
    else:
        result["verdict"] = VERDICTS[1]
    return result


def t_quantile(degrees):
    """The 97.5 % quantile of Student's t with `degrees` >= 1 degrees of freedom.

    Tabulated up to 30; beyond, the Cornish-Fisher expansion around the
    normal quantile (within 1e-5 of the exact value from 31 on).
    """
    if degrees <= len(_T975):
        return _T975[degrees - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * degrees)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * degrees**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * degrees**3)
    )


def _values(name, metric, values):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(
            f"Argument `{name}`: {metric!r} must be a sequence of per-seed scores, got {values!r}."
        )
    ok = all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )
    if not ok:
        raise ValueError(
            f"Argument `{name}`: {metric!r} must hold finite numbers, got {list(values)!r}."
        )
    return np.asarray(values, dtype="float64")
