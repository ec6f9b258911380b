"""Regime study: every method at its own best budget, learning rate and weight decay.

The protocol (docs/PROTOCOL_REGIME.md) was committed before the first run;
this module runs it on the study engine (experiments/study.py) and writes
docs/REGIME.md from the records:

    KERAS_BACKEND=jax python experiments/regime.py --workers 2      # resumable
    KERAS_BACKEND=jax python experiments/regime.py --report-only    # docs/REGIME.md

Stages, in queue order per configuration:

- `budget`: where a configuration has no converged budget E from the
  compute-fair study, the plain model at each budget of a grid, 2 seeds; E is
  the smallest budget within 0.5 points of the best mean validation accuracy.
- `lrwd` (stage 1a): every method, each learning rate x weight decay pair, at
  the training FLOPs of the plain model at E (share 1), seed 0.
- `length` (stage 1b): every method's best pair at the other shares of
  E's training FLOPs (0.5, 1.5, 2, 3), seed 0.
- `confirm` (stage 2): in each cell (configuration x FLOP cap), the best
  AgrLearn configuration, the best plain one and the best ensemble, chosen on
  validation, retrained with 5 fresh seeds and scored on confirmation data
  never evaluated before.

Every run stores its per-example predictions (validation, and confirmation
test in stage 2) beside the records (`docs/results/regime/<key>.npz`).
"""

import collections
import functools
import inspect
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_agrlearn  # noqa: E402
from experiments import backbones  # noqa: E402
from experiments import datasets  # noqa: E402
from experiments import flops  # noqa: E402
from experiments import regime_report  # noqa: E402
from experiments import stats  # noqa: E402
from experiments import study  # noqa: E402
from experiments.batches import OrderedBatches  # noqa: E402

# ---------------------------------------------------------------------------
# The protocol's constants (docs/PROTOCOL_REGIME.md)
# ---------------------------------------------------------------------------

CAPS = (1.5, 3.0)
# Training FLOPs as shares of the plain model's at E; 1 is stage 1a's budget.
SHARES = (0.5, 1.0, 1.5, 2.0, 3.0)
LRWD_SHARE = 1.0
WEIGHT_DECAYS = (0.0, 0.05)
INFERENCE_CAP = 1.1
# Training FLOPs may exceed a cap by this factor (whole epochs round up).
ROUNDING = 1.02
# Validation accuracy within this many points of the best counts as a tie,
# broken by the lower temperature-scaled validation NLL.
TIE = 0.005
FLAT = 0.005
BUDGET_SEEDS = 2
SELECTION_SEED = 0
CONFIRMATION_SEEDS = (100, 101, 102, 103, 104)
# Generator seed of the fresh MNIST-1D confirmation test set (never used before).
MNIST1D_CONFIRMATION_SEED = 20261207
MNIST1D_CONFIRMATION_SIZE = 4000
# Fashion-MNIST positions in the fixed permutation of its 60,000 training
# images (`datasets.load_fashion_mnist`): 50,000-59,999 validate.
FASHION_SELECTION_TRAIN = (0, 10000)
FASHION_CONFIRMATION_TRAIN = (10000, 20000)
FASHION_CONFIRMATION_TEST = (40000, 50000)
ENSEMBLE = 2
BOOTSTRAP_RESAMPLES = 2000

MNIST1D_LR = (3e-3, 1e-2, 3e-2)
FASHION_LR = (3e-4, 1e-3, 3e-3)


def _config(data, backbone, batch_size, lrs, train=None, E=None, budgets=None, source=None):
    return dict(
        data=data,
        backbone=backbone,
        batch_size=batch_size,
        learning_rates=lrs,
        train=train,
        E=E,
        budgets=budgets,
        source=source,
    )


CONFIGS = {
    "m1d-conv32": _config(
        "mnist1d",
        lambda: backbones.mnist1d_conv1d(32),
        64,
        MNIST1D_LR,
        E=160,
        source="mnist1d-32",
    ),
    "m1d-conv32-320": _config(
        "mnist1d",
        lambda: backbones.mnist1d_conv1d(32),
        64,
        MNIST1D_LR,
        train=320,
        budgets=(80, 160, 320, 640),
    ),
    "m1d-conv128": _config(
        "mnist1d",
        lambda: backbones.mnist1d_conv1d(128),
        64,
        MNIST1D_LR,
        E=20,
        source="mnist1d-128",
    ),
    "m1d-conv128-320": _config(
        "mnist1d",
        lambda: backbones.mnist1d_conv1d(128),
        64,
        MNIST1D_LR,
        train=320,
        budgets=(40, 80, 160, 320),
    ),
    "m1d-resnet": _config(
        "mnist1d",
        lambda: backbones.small_resnet((40, 1)),
        64,
        MNIST1D_LR,
        budgets=(10, 20, 40, 80),
    ),
    "m1d-resnet-320": _config(
        "mnist1d",
        lambda: backbones.small_resnet((40, 1)),
        64,
        MNIST1D_LR,
        train=320,
        budgets=(40, 80, 160, 320),
    ),
    "fashion-resnet8": _config(
        "fashion",
        backbones.small_resnet,
        128,
        FASHION_LR,
        E=20,
        source="fashion-resnet8",
    ),
}

# Each method: `wrap` arguments (None: the plain backbone), augmentation,
# ensemble members, and whether it is an AgrLearn method.
METHODS = {
    "plain": dict(wrap=None, augment=False),
    "plain-aug": dict(wrap=None, augment=True),
    "wrap": dict(wrap=dict(n=2), augment=False, agrlearn=True),
    "wrap-aug": dict(wrap=dict(n=2), augment=True, agrlearn=True),
    # MIMO as published (per-member loss, batch repetition 2, width 1, no input
    # repetition) with M = 2: M = 3 costs 1.19 x the Conv1D's inference FLOPs.
    "mimo": dict(
        wrap=dict(n=2, objective="slots", batch_repetition=2, repetition=0.0),
        augment=False,
        agrlearn=True,
    ),
    # MixMo's cut mixing of two encoders' features (needs `wrap(mixing=)`).
    "mixmo": dict(
        wrap=dict(n=2, mixing="cut", objective="slots", batch_repetition=2, repetition=0.0),
        augment=False,
        agrlearn=True,
        needs="mixing",
    ),
    "ensemble": dict(wrap=None, augment=False, members=ENSEMBLE),
}
AGRLEARN = tuple(m for m, spec in METHODS.items() if spec.get("agrlearn"))
PLAIN = ("plain", "plain-aug")
KEY_FIELDS = ("config", "stage", "method", "lr", "wd", "budget", "seed")


def available(method):
    """Whether this version of `wrap` has what the method needs."""
    needs = METHODS[method].get("needs")
    return needs is None or needs in inspect.signature(keras_agrlearn.wrap).parameters


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _quick_data(data):
    rng = np.random.default_rng(0)
    shape = {"mnist1d": (40, 1), "fashion": (28, 28, 1)}[data]

    def part(count):
        x = rng.random((count, *shape), dtype="float32")
        return x, rng.integers(0, 10, count).astype("int32")

    return part(64), part(32), part(32)


@functools.lru_cache(maxsize=None)
def _mnist1d(cache):
    return datasets.load_mnist1d(5000, Path(cache))


@functools.lru_cache(maxsize=None)
def _mnist1d_confirmation():
    x, y = datasets.make_mnist1d(MNIST1D_CONFIRMATION_SIZE, MNIST1D_CONFIRMATION_SEED)
    return x[..., None], y


@functools.lru_cache(maxsize=None)
def _fashion(directory):
    (x, y), val, _ = datasets.load_fashion_mnist(directory)
    return (x, y), val


def load(config, stage, options):
    """`(train, validation, test)` of a configuration at a stage (test None before stage 2)."""
    spec = CONFIGS[config]
    if options.quick:
        train, val, test = _quick_data(spec["data"])
        return train, val, (test if stage == "confirm" else None)
    if spec["data"] == "mnist1d":
        (x, y), val, _ = _mnist1d(options.cache)
        if spec["train"]:
            x, y = x[: spec["train"]], y[: spec["train"]]
        test = _mnist1d_confirmation() if stage == "confirm" else None
        return (x, y), val, test
    (x, y), val = _fashion(options.fashion_dir)
    start, stop = FASHION_CONFIRMATION_TRAIN if stage == "confirm" else FASHION_SELECTION_TRAIN
    train = (x[start:stop], y[start:stop])
    if stage != "confirm":
        return train, val, None
    start, stop = FASHION_CONFIRMATION_TEST
    return train, val, (x[start:stop], y[start:stop])


def augment(x, rng):
    """The standard augmentation: random crop after zero padding (images also flip).

    MNIST-1D: a shift of up to 4 of its 40 positions (pad 4, crop 40); no
    flip, since a reversed signal is another digit. Images: pad 4 pixels,
    crop 28 x 28, and a horizontal flip with probability 0.5.
    """
    pad = 4
    if x.ndim == 3:
        padded = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
        starts = rng.integers(0, 2 * pad + 1, len(x))
        return np.stack([p[s : s + x.shape[1]] for p, s in zip(padded, starts)])
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows, cols = rng.integers(0, 2 * pad + 1, (2, len(x)))
    out = np.stack(
        [p[r : r + x.shape[1], c : c + x.shape[2]] for p, r, c in zip(padded, rows, cols)]
    )
    flip = rng.random(len(x)) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


# ---------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------


def build(config, method, seed):
    model = CONFIGS[config]["backbone"]()
    args = METHODS[method]["wrap"]
    if args is None:
        return model
    return keras_agrlearn.wrap(model, seed=seed, **args)


def _layout(method):
    args = {"n": 1, "repetition": 0.0, "batch_repetition": 1, **(METHODS[method]["wrap"] or {})}
    if args["n"] > 1 and "repetition" not in (METHODS[method]["wrap"] or {}):
        args["repetition"] = keras_agrlearn._defaults.repetition_for(args["n"], "replicate")
    return args["n"], args["repetition"], args["batch_repetition"]


@functools.lru_cache(maxsize=None)
def epoch_cost(config, method, samples):
    """Training FLOPs of one epoch of a method (all members) on `samples` samples."""
    spec = CONFIGS[config]
    n, repetition, batch_repetition = _layout(method)
    one = flops.training_flops(
        build(config, method, 0),
        samples,
        spec["batch_size"],
        1,
        n=n,
        repetition=repetition,
        batch_repetition=batch_repetition,
    )
    return one * METHODS[method].get("members", 1)


@functools.lru_cache(maxsize=None)
def inference_share(config, method):
    """A method's inference FLOPs per sample relative to the plain model's."""
    plain = flops.forward_flops(build(config, "plain", 0))
    return flops.forward_flops(build(config, method, 0)) * METHODS[method].get("members", 1) / plain


def epochs_at(config, method, share, E, samples):
    """The whole epochs closest to `share` x the plain model's training FLOPs at E (at least 1)."""
    target = share * E * epoch_cost(config, "plain", samples)
    return max(1, round(target / epoch_cost(config, method, samples)))


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def scores(probs, labels, bins=15):
    """Accuracy, NLL, ECE (15 equal-width bins of confidence) and Brier score."""
    labels = np.asarray(labels)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype("float64")
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = sum(
        abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
        for b in range(bins)
        if np.any(which == b)
    )
    onehot = np.eye(probs.shape[1])[labels]
    return dict(
        acc=float(correct.mean()),
        nll=float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-30, None)))),
        ece=float(ece),
        brier=float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
    )


def run(job, options):
    """Trains one run and returns its record; its predictions go beside the records."""
    config, method, seed = job["config"], job["method"], job["seed"]
    spec, mspec = CONFIGS[config], METHODS[method]
    (x, y), (x_val, y_val), test = load(config, job["stage"], options)
    epochs = 1 if options.quick else job["epochs"]
    models, train_s = [], 0.0
    keras.backend.clear_session()
    for member in range(mspec.get("members", 1)):
        member_seed = seed + 1000 * member
        keras.utils.set_random_seed(member_seed)
        model = build(config, method, member_seed)
        steps = epochs * math.ceil(len(x) / spec["batch_size"])
        schedule = keras.optimizers.schedules.CosineDecay(job["lr"], decay_steps=steps)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=job["wd"]),
            loss="sparse_categorical_crossentropy",
        )
        start = time.perf_counter()
        # MixMo lowers its cut probability to 0 over the last twelfth of training.
        mixing = (mspec["wrap"] or {}).get("mixing", "sum") != "sum"
        model.fit(
            OrderedBatches(
                x, y, spec["batch_size"], member_seed, augment if mspec["augment"] else None
            ),
            epochs=epochs,
            verbose=0,
            callbacks=[keras_agrlearn.MixingDecay()] if mixing else [],
        )
        train_s += time.perf_counter() - start
        models.append(model)

    def predict(inputs):
        return np.mean([m.predict(inputs, batch_size=500, verbose=0) for m in models], axis=0)

    val_probs = predict(x_val)
    temperature = keras_agrlearn.fit_temperature(val_probs, y_val, from_logits=False)
    record = dict(
        job,
        epochs=epochs,
        train_samples=len(x),
        train_flops=epoch_cost(config, method, len(x)) * epochs,
        train_flops_x=epoch_cost(config, method, len(x))
        * epochs
        / (job["E"] * epoch_cost(config, "plain", len(x))),
        infer_flops_x=inference_share(config, method),
        train_s=round(train_s, 2),
        temperature=round(temperature, 4),
        val=scores(val_probs, y_val),
        val_tempered=scores(stats.tempered(val_probs, temperature), y_val),
    )
    arrays = dict(val=val_probs.astype("float32"), val_labels=y_val)
    if test is not None:
        test_probs = predict(test[0])
        record["test"] = scores(test_probs, test[1])
        record["test_tempered"] = scores(stats.tempered(test_probs, temperature), test[1])
        arrays["test"] = test_probs.astype("float32")
        arrays["test_labels"] = test[1]
    key = study.job_key(job, KEY_FIELDS)
    study.save_predictions(options.records, key, **arrays)
    return record


# ---------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------


def learning_rates(config, options):
    lrs = CONFIGS[config]["learning_rates"]
    return lrs[1:2] if options.quick else lrs


def samples_of(config, options):
    if options.quick:
        return 64
    spec = CONFIGS[config]
    if spec["data"] == "fashion":
        return FASHION_SELECTION_TRAIN[1] - FASHION_SELECTION_TRAIN[0]
    return spec["train"] or 3200


def converged_budget(config, records, options):
    """E: the configuration's known value, or the smallest budget of its grid
    within FLAT of the best mean validation accuracy (None until all are in)."""
    spec = CONFIGS[config]
    if options.quick:
        return 1
    if spec["E"] is not None:
        return spec["E"]
    means = {}
    for budget in spec["budgets"]:
        values = [
            r["val"]["acc"]
            for r in records.values()
            if r["config"] == config and r["stage"] == "budget" and r["budget"] == budget
        ]
        if len(values) < BUDGET_SEEDS:
            return None
        means[budget] = float(np.mean(values))
    best = max(means.values())
    return min(b for b in spec["budgets"] if means[b] >= best - FLAT)


def _job(config, stage, method, lr, wd, budget, seed, epochs, E):
    return dict(
        config=config,
        stage=stage,
        method=method,
        lr=lr,
        wd=wd,
        budget=budget,
        seed=seed,
        epochs=epochs,
        E=E,
    )


def stage_records(records, config, method=None, stages=("lrwd", "length")):
    return [
        r
        for r in records.values()
        if r["config"] == config
        and r["stage"] in stages
        and (method is None or r["method"] == method)
    ]


def best_pair(records, config, method, options):
    """The method's best (learning rate, weight decay) at share 1; None until all are in."""
    runs = stage_records(records, config, method, ("lrwd",))
    if len(runs) < len(learning_rates(config, options)) * len(WEIGHT_DECAYS):
        return None
    best = pick(runs)
    return best["lr"], best["wd"]


def pick(runs):
    """The best run by validation accuracy; within TIE of it, the lowest tempered validation NLL."""
    top = max(r["val"]["acc"] for r in runs)
    tied = [r for r in runs if r["val"]["acc"] >= top - TIE]
    return min(tied, key=lambda r: (r["val_tempered"]["nll"], r["key"]))


def eligible(run, cap):
    within = run["train_flops_x"] <= cap * ROUNDING
    return within and (run["method"] == "ensemble" or run["infer_flops_x"] <= INFERENCE_CAP)


def _stage_one_finished(records, config, options):
    """The methods of `config` whose stage-1 runs are all recorded."""
    each = len(learning_rates(config, options)) * len(WEIGHT_DECAYS) + len(options.shares) - 1
    counts = collections.Counter(r["method"] for r in stage_records(records, config))
    return {method for method, count in counts.items() if count >= each}


def _families(options):
    return (
        ("agrlearn", [m for m in AGRLEARN if m in options.methods]),
        ("plain", [m for m in PLAIN if m in options.methods]),
        ("ensemble", [m for m in ("ensemble",) if m in options.methods]),
    )


def choices(records, config, cap, options):
    """The cell's chosen runs on validation, `{"agrlearn", "plain", "ensemble"}`.

    None until the stage 1 of every method the decision compares (AgrLearn's and
    the plain ones) is complete; the ensemble, a reference only, joins once its
    own stage 1 is.
    """
    families = _families(options)
    finished = _stage_one_finished(records, config, options)
    if not {m for _, members in families[:2] for m in members} <= finished:
        return None
    runs = [r for r in stage_records(records, config) if r["method"] in options.methods]
    out = {}
    for family, members in families:
        if not set(members) <= finished:
            continue
        candidates = [r for r in runs if r["method"] in members and eligible(r, cap)]
        if candidates:
            out[family] = pick(candidates)
    return out


def jobs(options, records):
    """Runs in queue order: per configuration, budget, stage 1a, stage 1b, stage 2."""
    out = []
    for config in options.configs:
        spec = CONFIGS[config]
        samples = samples_of(config, options)
        if spec["E"] is None and not options.quick and "budget" in options.stages:
            lr = spec["learning_rates"][1]
            for seed in range(BUDGET_SEEDS):
                for budget in spec["budgets"]:
                    out.append(
                        _job(config, "budget", "plain", lr, 0.0, budget, seed, budget, budget)
                    )
        E = converged_budget(config, records, options)
        if "lrwd" in options.stages:
            for method in options.runnable:
                for lr in learning_rates(config, options):
                    for wd in WEIGHT_DECAYS:
                        if E is None:
                            out.append(None)
                            continue
                        epochs = epochs_at(config, method, LRWD_SHARE, E, samples)
                        out.append(
                            _job(
                                config,
                                "lrwd",
                                method,
                                lr,
                                wd,
                                LRWD_SHARE,
                                SELECTION_SEED,
                                epochs,
                                E,
                            )
                        )
        # The compared methods' stage 1b and stage 2 come before the ensemble's
        # stage 1b and stage 2: the ensemble is a reference and no choice waits for it.
        seen = set()
        compared = [m for m in options.runnable if m != "ensemble"]
        reference = [m for m in options.runnable if m == "ensemble"]
        finished = _stage_one_finished(records, config, options)
        for methods, families in ((compared, ("agrlearn", "plain")), (reference, ("ensemble",))):
            if not methods:
                continue
            if "length" in options.stages:
                for method in methods:
                    pair = None if E is None else best_pair(records, config, method, options)
                    for share in options.shares:
                        if share == LRWD_SHARE:
                            continue
                        if pair is None:
                            out.append(None)
                            continue
                        epochs = epochs_at(config, method, share, E, samples)
                        out.append(
                            _job(config, "length", method, *pair, share, SELECTION_SEED, epochs, E)
                        )
            if "confirm" in options.stages:
                for cap in options.caps:
                    # Waits for the stage 1 of its own methods and of the compared ones.
                    if E is None or not set(methods) <= finished:
                        out.append(None)
                        continue
                    chosen = choices(records, config, cap, options)
                    if chosen is None:
                        out.append(None)
                        continue
                    for family in families:
                        if family not in chosen:
                            continue
                        run = chosen[family]
                        what = (run["method"], run["lr"], run["wd"], run["budget"])
                        if what in seen:
                            continue
                        seen.add(what)
                        for seed in options.confirmation_seeds:
                            out.append(_job(config, "confirm", *what, seed, run["epochs"], E))
    return out


def describe(record):
    return (
        f"{record['key']}: {record['epochs']} epochs, train x{record['train_flops_x']:.2f}, "
        f"val acc {record['val']['acc']:.4f}, T {record['temperature']:.2f}"
        + (f", test acc {record['test']['acc']:.4f}" if "test" in record else "")
        + f", {record['train_s']:.0f} s"
    )


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

STAGES = ("budget", "lrwd", "length", "confirm")


def add_arguments(p):
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--methods", default="", help=f"subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)}")
    p.add_argument("--report", default=str(ROOT / "docs" / "REGIME.md"))
    p.add_argument("--cache", default=str(ROOT / "docs" / "results" / "cache"))
    p.add_argument("--fashion-dir", default=datasets.FASHION_MNIST_PATH)


def _names(options, text, allowed, what):
    chosen = [v for v in text.split(",") if v]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        options.error(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return chosen


def finish(options):
    options.configs = _names(options, options.configs, CONFIGS, "--configs")
    options.stages = _names(options, options.stages, STAGES, "--stages")
    options.methods = _names(options, options.methods, METHODS, "--methods") or list(METHODS)
    # Stage 2 of a configuration waits for the stage 1 of every compared method
    # asked for (all by default); those this `wrap` cannot build yet are not queued.
    options.runnable = [m for m in options.methods if available(m)]
    options.caps = CAPS
    options.shares = SHARES
    options.confirmation_seeds = CONFIRMATION_SEEDS
    if options.quick:
        options.shares = (1.0, 3.0)
        options.confirmation_seeds = CONFIRMATION_SEEDS[:2]


REGIME = study.Study(
    name="regime",
    key_fields=KEY_FIELDS,
    jobs=jobs,
    run=run,
    report=lambda records, options, argv: regime_report.write(records, options, protocol()),
    describe=describe,
    add_arguments=add_arguments,
    finish=finish,
    records="docs/results/regime.jsonl",
)


def protocol():
    """What the report needs to know of the protocol (the report imports no study module)."""
    return dict(
        caps=CAPS,
        shares=SHARES,
        tie=TIE,
        inference_cap=INFERENCE_CAP,
        rounding=ROUNDING,
        agrlearn=AGRLEARN,
        plain=PLAIN,
        methods={m: {k: v for k, v in spec.items()} for m, spec in METHODS.items()},
        configs={
            c: {k: v for k, v in spec.items() if k != "backbone"} for c, spec in CONFIGS.items()
        },
        choices=choices,
        resamples=BOOTSTRAP_RESAMPLES,
    )


def main(argv=None):
    return study.main(REGIME, argv, __doc__.split("\n")[0], __file__)


if __name__ == "__main__":
    main()
