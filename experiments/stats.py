"""Paired statistics shared by every study.

- `paired_t`: the mean and 95 % half-width of paired (same seed) differences,
  over seeds only: the studies' summary figure where per-example predictions
  were not stored.
- `paired_bootstrap`: the interval of a paired difference over seeds *and*
  evaluation examples, resampled together (two-level bootstrap), so that the
  evaluation set's own sampling error is part of it.
- `holm`: Holm's step-down levels for several cells, so that a family of
  verdicts keeps its error rate.
"""

import math

import numpy as np

# t(0.975, df) for small df; the normal quantile above 30.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_quantile(df):
    """t(0.975, df): exact values for small df, the normal quantile above."""
    if df in _T975:
        return _T975[df]
    below = max(k for k in _T975 if k <= df)
    return _T975[below] if df < 30 else 1.96


def paired_t(diffs):
    """Mean and 95 % half-width (t over seeds) of paired differences; NaN below 2."""
    diffs = np.asarray(diffs, dtype="float64")
    if len(diffs) < 2:
        return (float(diffs.mean()) if len(diffs) else math.nan), math.nan
    half = t_quantile(len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean()), float(half)


def tempered(probs, temperature):
    """Probabilities `probs` (rows) tempered: `softmax(log(probs) / temperature)`."""
    z = np.log(np.clip(probs, 1e-30, None)) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def verdict(low, high):
    """'win' if the interval lies above zero, 'loss' below, 'tie' across, 'n/a' if unknown."""
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    if low > 0:
        return "win"
    if high < 0:
        return "loss"
    return "tie"


def paired_bootstrap(a, b, alpha=0.05, resamples=2000, seed=0):
    """A two-level paired bootstrap of mean(a) - mean(b).

    Args:
        a, b: arrays of shape (seeds, examples), a per-example score (1 for a
            correct prediction, or a negative log-likelihood) of two methods;
            row s of both comes from the same seed, column i from the same
            evaluation example.
        alpha: two-sided error level of the interval.
        resamples: bootstrap resamples.
        seed: the resampling seed (fixed, so reports regenerate exactly).

    Returns:
        dict with `mean` (the observed difference), `low` and `high` (the
        percentile interval at level 1 - alpha) and `p` (two-sided bootstrap
        p-value of a zero difference).

    Each resample draws seeds with replacement and, independently, examples
    with replacement; both methods get the same draws (pairing), so the
    interval covers seed-to-seed variation and the evaluation set's sampling
    error together.
    """
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be (seeds, examples) of one shape; got {a.shape}, {b.shape}"
        )
    diff = a - b
    seeds, examples = diff.shape
    rng = np.random.default_rng(seed)
    # The mean over a resample of seeds S and examples I is the mean of the
    # per-seed example means over S; per-seed sums over I are computed once
    # per resample from the counts of each example.
    per_seed = (
        np.concatenate(
            [
                rng.multinomial(examples, np.full(examples, 1.0 / examples), size=chunk) @ diff.T
                for chunk in _chunks(resamples, 250)
            ]
        )
        / examples
    )  # (resamples, seeds)
    pick = rng.integers(0, seeds, size=(resamples, seeds))
    draws = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    p = 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))
    return dict(mean=float(diff.mean()), low=float(low), high=float(high), p=float(min(p, 1.0)))


def _chunks(total, size):
    return [min(size, total - start) for start in range(0, total, size)]


def holm(pvalues, alpha=0.05):
    """Holm's step-down error levels for cells with these p-values.

    Returns, per cell (in the given order), the level alpha / (m - rank) at
    which it is tested, and whether it is rejected: the cells are taken in
    increasing p; each is tested at alpha / (number of cells not yet taken),
    and once one is not rejected none after it is.
    """
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    levels, rejected, going = [None] * len(pvalues), [False] * len(pvalues), True
    for rank, i in enumerate(order):
        levels[i] = alpha / (len(pvalues) - rank)
        going = going and pvalues[i] <= levels[i]
        rejected[i] = going
    return levels, rejected
