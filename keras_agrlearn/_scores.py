"""NumPy scores behind `evaluate_uncertainty`, in float64.

Probabilities are `(N, K)` arrays whose rows sum to 1, member probabilities
`(N, M, K)`, labels `(N,)` integers in `[0, K)`. Out-of-distribution scores
follow the convention that a higher score means "more likely OOD", and the
OOD samples are the positives.
"""

import numpy as np

# The smallest probability in the NLL, as in `NegativeLogLikelihood`.
EPSILON = 1e-7


def entropy(probs):
    """Shannon entropy in nats of each row, with 0 log 0 = 0."""
    probs = np.asarray(probs, dtype="float64")
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -np.sum(probs * logs, axis=-1)


def accuracy(probs, labels):
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def nll(probs, labels):
    true = probs[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.clip(true, EPSILON, 1.0))))


def ece(probs, labels, num_bins):
    """Guo et al. (2017), equal-width bins, as in `ExpectedCalibrationError`."""
    confidence = np.max(probs, axis=-1)
    correct = (np.argmax(probs, axis=-1) == labels).astype("float64")
    bins = np.minimum((confidence * num_bins).astype("int64"), num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    gaps = np.abs(
        np.bincount(bins, correct, minlength=num_bins)
        - np.bincount(bins, confidence, minlength=num_bins)
    )
    return float(np.sum(gaps) / np.sum(counts))


def brier(probs, labels):
    targets = np.eye(probs.shape[-1])[labels]
    return float(np.mean(np.sum((probs - targets) ** 2, axis=-1)))


def member_accuracy(member_probs, labels):
    votes = np.argmax(member_probs, axis=-1)
    return float(np.mean(votes == labels[:, None]))


def disagreement(member_probs):
    """Share of member pairs whose top classes differ, averaged over samples.

    0 for a single member, which has no pairs.
    """
    members, classes = member_probs.shape[1:]
    if members < 2:
        return 0.0
    votes = np.argmax(member_probs, axis=-1)
    counts = np.stack([np.sum(votes == k, axis=1) for k in range(classes)], axis=1)
    agreeing = np.sum(counts * (counts - 1) / 2, axis=1)
    return float(np.mean(1.0 - agreeing / (members * (members - 1) / 2)))


def mutual_information(member_probs):
    """Entropy of the mean member prediction minus the mean member entropy.

    One value per sample, in nats; clipped at 0 against rounding (it is
    never negative, by the concavity of the entropy).
    """
    total = entropy(np.mean(member_probs, axis=1))
    return np.maximum(total - np.mean(entropy(member_probs), axis=1), 0.0)


def _curve(negatives, positives):
    """True- and false-positive counts at each distinct threshold, descending."""
    scores = np.concatenate([negatives, positives])
    positive = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    values, inverse = np.unique(scores, return_inverse=True)
    true_pos = np.bincount(inverse, positive, minlength=len(values))[::-1]
    false_pos = np.bincount(inverse, 1.0 - positive, minlength=len(values))[::-1]
    return np.cumsum(true_pos), np.cumsum(false_pos)


def auroc(negatives, positives):
    """Area under the ROC curve: P(positive score > negative score), ties 1/2."""
    scores = np.concatenate([negatives, positives])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average 1-based ranks of tied scores (Mann-Whitney U).
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos, n_neg = len(positives), len(negatives)
    rank_sum = np.sum(ranks[len(negatives) :])
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(negatives, positives):
    """Area under the precision-recall curve as a step function (no interpolation)."""
    true_pos, false_pos = _curve(negatives, positives)
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / len(positives)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def fpr_at_tpr(negatives, positives, tpr=0.95):
    """False-positive rate at the highest threshold whose TPR reaches `tpr`."""
    true_pos, false_pos = _curve(negatives, positives)
    reached = np.searchsorted(true_pos / len(positives), tpr, side="left")
    return float(false_pos[reached] / len(negatives))
