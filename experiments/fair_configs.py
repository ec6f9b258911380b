"""The compute-fair study's configurations and arms, shared by the study and its report.

docs/PROTOCOL.md fixes them; `experiments/fair.py` runs them and
`experiments/fair_report.py` tabulates their records. Also here: the training
sizes of a configuration and the budget E chosen from the budget runs, which
both need.
"""

import math

import numpy as np

from experiments import backbones

N = 3
SQRT_N = round(math.sqrt(N), 2)
NARROW = round(1 / math.sqrt(N), 2)
# Budgets within this much validation accuracy of the best count as converged.
FLAT = 0.005
BUDGET_SEEDS = 2
# Adam's peak learning rate, unless a configuration names its own (MNIST-1D:
# 1e-2, as in its reference training code; at 1e-3 the plain model was still
# improving after 160 epochs of 3,200 samples).
LEARNING_RATE = 1e-3
DATA_FRACTIONS = (0.1, 0.2, 0.5)
DATA_SEEDS = 3
# Fashion-MNIST's training images left after the 10,000 that validate.
FASHION_TRAIN = 50000


def selection_config(data, channels, **extra):
    """A selection configuration: MNIST-1D's Conv1D or digits' CNN at `channels`."""
    spec = dict(data=data, seeds=5, role="selection", **extra)
    if data == "mnist1d":
        # Adam at 1e-2, as in MNIST-1D's reference training code.
        spec.update(batch_size=64, learning_rate=1e-2)
        spec["backbone"] = lambda: backbones.mnist1d_conv1d(channels)
    else:
        spec.update(batch_size=32)
        spec["backbone"] = lambda: backbones.digits_cnn(channels)
    return spec


# Each configuration: data, backbone, batch size, the budget grid (epochs),
# seeds, and whether it takes part in choosing (selection) or only confirms.
CONFIGS = {
    "mnist1d-16": selection_config("mnist1d", 16, budgets=(20, 40, 80, 160)),
    "mnist1d-32": selection_config("mnist1d", 32, budgets=(20, 40, 80, 160)),
    "mnist1d-128": selection_config("mnist1d", 128, budgets=(10, 20, 40, 80), data_efficiency=True),
    "digits-8": selection_config("digits", 8, budgets=(10, 20, 40, 80, 160)),
    "digits-64": selection_config("digits", 64, budgets=(10, 20, 40, 80)),
    "fashion-convnet": dict(
        data="fashion",
        backbone=backbones.fashion_convnet,
        batch_size=128,
        budgets=(5, 10, 20),
        seeds=3,
        role="confirmation",
        arms="confirmation",
        data_efficiency=True,
        # Of the configuration's training images: 0.5 of 10,000 is 10 % of
        # Fashion-MNIST's 50,000; the arms phase is the 20 % point and
        # `fashion-convnet-full` the 100 % point.
        data_fractions=(0.5,),
        data_arms=("plain", "plain-long2", "wrap-n2", "wrap-mimo"),
        # The configuration that trains on the whole training set (the 100 %
        # point while this one trains on part of it).
        data_full="fashion-convnet-full",
    ),
    # All 50,000 training images, at the E chosen on 10,000: the plain model,
    # the chosen defaults and the plain model at their training FLOPs (the
    # tutorial's 91 % applies to this set).
    "fashion-convnet-full": dict(
        data="fashion",
        train_size=50000,
        backbone=backbones.fashion_convnet,
        batch_size=128,
        budget_from="fashion-convnet",
        seeds=3,
        role="confirmation",
        arms=("plain", "wrap-n2", "plain-short"),
    ),
    "fashion-resnet8": dict(
        data="fashion",
        backbone=backbones.small_resnet,
        batch_size=128,
        budgets=(5, 10, 20),
        seeds=3,
        role="confirmation",
        arms="confirmation",
    ),
    "fashion-resnet20": dict(
        data="fashion",
        backbone=lambda: backbones.small_resnet(blocks=3),
        batch_size=128,
        budgets=(10, 20, 40),
        seeds=3,
        role="confirmation",
        arms="confirmation",
    ),
}
DEFAULT_CONFIGS = (
    "mnist1d-16",
    "mnist1d-32",
    "mnist1d-128",
    "digits-8",
    "digits-64",
    "fashion-convnet",
)

# Each arm: how the model is built (`wrap` arguments; n=1 is a plain model,
# widened or narrowed), its epochs as a factor of E ("matched": the plain
# model's epochs that cost the defaults' training FLOPs), ensemble members,
# and the inference protocols it is scored with.
ARMS = {
    "plain": dict(wrap=None, epochs=1),
    "plain-long2": dict(wrap=None, epochs=2),
    # The flatness check beyond 2E (run on request).
    "plain-long4": dict(wrap=None, epochs=4),
    "plain-long-matched": dict(wrap=None, epochs="matched"),
    # Plain, trained for the epochs that cost `wrap-n2`'s training FLOPs.
    "plain-short": dict(wrap=None, epochs="n2-matched"),
    "plain-wide": dict(wrap=dict(n=1, width=SQRT_N), epochs=1),
    "plain-wide-long2": dict(wrap=dict(n=1, width=SQRT_N), epochs=2),
    "plain-narrow": dict(wrap=dict(n=1, width=NARROW), epochs=1),
    "ensemble": dict(wrap=None, epochs=1, members=N),
    "wrap-defaults": dict(
        wrap=dict(n=N, width=SQRT_N, repetition=0.5, batch_repetition=N), epochs=1
    ),
    "wrap-mimo": dict(wrap=dict(n=N, width=1.0, repetition=0.5, batch_repetition=N), epochs=1),
    "wrap-paper": dict(
        wrap=dict(n=N, width=SQRT_N, repetition=0.0, batch_repetition=1),
        epochs=N,
        inference=("replicate", "group"),
    ),
    "wrap-group": dict(
        wrap=dict(n=N, width=1.0, repetition=0.0, batch_repetition=N),
        epochs=1,
        inference=("group",),
    ),
    "wrap-n2": dict(wrap=dict(n=2, width=1.0, repetition=0.5, batch_repetition=1), epochs=1),
    # Where E is the top of its grid (the plain model still gaining), the same
    # at 2E, against `plain-long2` (run on request: `--arms wrap-n2-long2`).
    "wrap-n2-long2": dict(wrap=dict(n=2, width=1.0, repetition=0.5, batch_repetition=1), epochs=2),
}
# Arms that run only where `--arms` names them.
ON_REQUEST = ("wrap-n2-long2", "plain-long4")
AGRLEARN_ARMS = tuple(a for a in ARMS if a.startswith("wrap-"))
PLAIN_ARMS = tuple(a for a in ARMS if not a.startswith("wrap-"))
# Fashion-MNIST (confirmation): plain, the defaults chosen on the selection
# data (`wrap-n2`) and its compute-matched plain arm (`plain-short`: plain
# trained for the epochs that cost wrap-n2's training FLOPs), MIMO's setting
# and its compute-matched plain arm (`plain-long2`: about its training FLOPs
# at 1 x inference), the ensemble.
CONFIRMATION_ARMS = (
    "plain",
    "wrap-n2",
    "plain-short",
    "wrap-mimo",
    "plain-long2",
    "ensemble",
)
DATA_ARMS = ("plain", "plain-long2", "plain-wide-long2", "wrap-defaults", "wrap-mimo", "wrap-n2")


# ---------------------------------------------------------------------------
# Sizes and the budget
# ---------------------------------------------------------------------------


def train_size(config, options):
    """Training samples of a configuration (Fashion-MNIST: its slice of the 50,000)."""
    spec = CONFIGS[config]
    if spec["data"] == "fashion" and not options.quick:
        return spec.get("train_size", options.fashion_train)
    return options.samples[spec["data"]]


def full_size(config, options):
    """Training samples of the configuration's whole dataset."""
    data = CONFIGS[config]["data"]
    return FASHION_TRAIN if data == "fashion" and not options.quick else options.samples[data]


def budget_records(records, config):
    return [r for r in records.values() if r["config"] == config and r["phase"] == "budget"]


def choose_budget(records, config, seeds=BUDGET_SEEDS):
    """E: the smallest budget within FLAT of the best mean validation accuracy.

    None until every budget run of the grid has a record.
    """
    runs = budget_records(records, config)
    grid = CONFIGS[config]["budgets"]
    means = {}
    for budget in grid:
        values = [
            r["evaluations"]["replicate"]["val"]["acc"] for r in runs if r["budget"] == budget
        ]
        if len(values) < seeds:
            return None
        means[budget] = float(np.mean(values))
    best = max(means.values())
    return min(b for b in grid if means[b] >= best - FLAT)


def arms_of(config, phase, only=()):
    """The configuration's arms of a phase; with `only`, those of them named
    there, and the on-request arms named there (arms phase)."""
    spec = CONFIGS[config]
    if phase == "data":
        arms = spec.get("data_arms", DATA_ARMS)
    else:
        arms = spec.get("arms", tuple(a for a in ARMS if a not in ON_REQUEST))
        arms = CONFIRMATION_ARMS if arms == "confirmation" else arms
        arms = (*arms, *ON_REQUEST)
    if not only:
        return tuple(a for a in arms if a not in ON_REQUEST)
    return tuple(a for a in arms if a in only)
