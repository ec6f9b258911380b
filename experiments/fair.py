"""Compute-fair study: `wrap` against the same compute spent on the plain model another way.

The protocol (datasets, budgets, arms, seeds, metrics, decision rule) is in
docs/PROTOCOL.md and was committed before the first run; this module runs it:

    KERAS_BACKEND=jax python experiments/fair.py                # the CPU study, resumable
    KERAS_BACKEND=jax python experiments/fair.py --report-only  # docs/FAIR.md from the records

Phases, in queue order:

- `budget`: the plain model (width 1) trained with Adam and cosine decay to
  each budget of the configuration's grid, 2 seeds; E is the smallest budget
  whose mean validation accuracy is within `FLAT` of the best one.
- `arms`: every arm of `ARMS` at E (times the arm's epoch factor), on the
  configuration's seeds, seed-major so that one seed of every arm lands first.
- `data`: the data-efficiency arms on 10, 20 and 50 % of the training set
  (MNIST-1D), at the same number of optimizer steps as the full set.

Every run is one JSON line in `--records` (`docs/results/fair.jsonl`); a run
whose key is there is skipped, so the study resumes where it stopped. Workers
(`--workers`) claim runs in queue order. `--deadline` (seconds) stops
claiming new runs after that time, for short machine loans. `--priority-arms`
moves the named arms of seed 0 up to right after their configuration's
budget runs (ahead of the next configuration's), so that the comparison
that matters most lands first on a machine lent for a short time.
"""

import argparse
import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
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
from experiments.records import load_jsonl as load_records  # noqa: E402
from keras_agrlearn.metrics import BrierScore  # noqa: E402
from keras_agrlearn.metrics import ExpectedCalibrationError  # noqa: E402
from keras_agrlearn.metrics import NegativeLogLikelihood  # noqa: E402

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
# Data
# ---------------------------------------------------------------------------


def load_data(name, options):
    """`(train, validation, test)` pairs of one dataset."""
    if options.quick:
        rng = np.random.default_rng(0)
        shape = {"mnist1d": (40, 1), "digits": (8, 8, 1), "fashion": (28, 28, 1)}[name]

        def part(count):
            return rng.random((count, *shape), dtype="float32"), rng.integers(0, 10, count).astype(
                "int32"
            )

        return part(96), part(48), part(48)
    if name == "mnist1d":
        # MNIST-1D's standard 4,000 / 1,000 split; 800 of the 4,000 validate.
        return datasets.load_mnist1d(5000, Path(options.cache))
    if name == "digits":
        return datasets.load_digits()
    return datasets.load_fashion_mnist(options.fashion_dir)


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


def config_data(config, data, options):
    """The configuration's slice of its dataset (Fashion-MNIST: its training images)."""
    spec = CONFIGS[config]
    if spec["data"] != "fashion" or options.quick:
        return data
    (x, y), validation, test = data
    size = train_size(config, options)
    return (x[:size], y[:size]), validation, test


class OrderedBatches(keras.utils.PyDataset):
    """Batches in an order fixed by the seed: every arm of a seed sees the same order."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0
        self.order = self._order()

    def _order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def build(config, wrap_args, seed, inference="replicate"):
    model = CONFIGS[config]["backbone"]()
    if wrap_args is None:
        return model
    args = {"repetition": 0.0, "batch_repetition": 1, **wrap_args}
    return keras_agrlearn.wrap(model, seed=seed, inference=inference, **args)


@functools.lru_cache(maxsize=None)
def training_cost(config, samples, arm):
    """An AgrLearn arm's training FLOPs per epoch as a share of the plain model's."""
    spec, args = CONFIGS[config], ARMS[arm]["wrap"]
    plain = flops.training_flops(build(config, None, 0), samples, spec["batch_size"], 1)
    agr = flops.training_flops(
        build(config, args, 0),
        samples,
        spec["batch_size"],
        1,
        n=args["n"],
        repetition=args["repetition"],
        batch_repetition=args["batch_repetition"],
    )
    return agr / plain


def matched_factor(config, samples):
    """Epochs factor at which the plain model costs the defaults' training FLOPs."""
    return max(1, round(training_cost(config, samples, "wrap-defaults")))


def n2_cost(config, samples):
    """`wrap-n2`'s training FLOPs per epoch as a share of the plain model's."""
    return training_cost(config, samples, "wrap-n2")


def epochs_for(arm, config, budget, samples):
    factor = ARMS[arm]["epochs"]
    if factor == "matched":
        factor = matched_factor(config, samples)
    if factor == "n2-matched":
        return max(1, round(budget * n2_cost(config, samples)))
    return budget * factor


def fit(model, x, y, batch_size, epochs, seed, learning_rate, validation=None):
    steps = epochs * math.ceil(len(x) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    start = time.perf_counter()
    history = model.fit(
        OrderedBatches(x, y, batch_size, seed), epochs=epochs, verbose=0, validation_data=validation
    )
    return time.perf_counter() - start, history.history


def score(probs, y):
    """Accuracy, NLL, ECE (15 bins) and Brier score of probabilities."""
    result = {"acc": float(np.mean(np.argmax(probs, -1) == y))}
    for name, metric in (
        ("nll", NegativeLogLikelihood()),
        ("ece", ExpectedCalibrationError()),
        ("brier", BrierScore()),
    ):
        metric.update_state(y, probs)
        result[name] = float(metric.result())
    return result


def predict(models, x, batch_size=500):
    """Mean probabilities of `models`, and the seconds of a second (warm) pass."""
    probs = [m.predict(x, batch_size=batch_size, verbose=0) for m in models]
    start = time.perf_counter()
    for m in models:
        m.predict(x, batch_size=batch_size, verbose=0)
    return np.mean(probs, axis=0), time.perf_counter() - start


def run(job, data, options):
    """Trains one arm (or one budget of the plain model) and returns its record."""
    config, arm, seed, budget, fraction = (
        job[k] for k in ("config", "arm", "seed", "budget", "fraction")
    )
    spec = CONFIGS[config]
    (x, y), (x_val, y_val), (x_test, y_test) = data
    if fraction < 1:
        keep = np.random.default_rng(1000 + seed).permutation(len(x))[: int(fraction * len(x))]
        x, y = x[keep], y[keep]
    arm_spec = ARMS[arm]
    epochs = 1 if options.quick else job["epochs"]
    wrap_args = arm_spec["wrap"]
    models, train_s, curve = [], 0.0, None
    keras.backend.clear_session()
    for member in range(arm_spec.get("members", 1)):
        member_seed = seed + 100 * member
        keras.utils.set_random_seed(member_seed)
        model = build(config, wrap_args, member_seed)
        validation = (x_val, y_val) if job["phase"] == "budget" else None
        seconds, history = fit(
            model,
            x,
            y,
            spec["batch_size"],
            epochs,
            member_seed,
            spec.get("learning_rate", LEARNING_RATE),
            validation,
        )
        train_s += seconds
        if validation is not None:
            curve = {k: [round(float(v), 5) for v in history[k]] for k in ("val_loss",)}
        models.append(model)
    plain = build(config, None, 0)
    plain_fwd = flops.forward_flops(plain)
    samples_full = len(data[0][0])
    plain_train = flops.training_flops(plain, samples_full, spec["batch_size"], job["budget"])
    wrap_full = {"n": 1, "repetition": 0.0, "batch_repetition": 1, **(wrap_args or {})}
    train_flops = len(models) * flops.training_flops(
        models[0],
        len(x),
        spec["batch_size"],
        epochs,
        n=wrap_full["n"],
        repetition=wrap_full["repetition"],
        batch_repetition=wrap_full["batch_repetition"],
    )
    record = dict(
        job,
        epochs=epochs,
        train_samples=len(x),
        params=int(models[0].count_params()),
        learning_rate=spec.get("learning_rate", LEARNING_RATE),
        train_s=round(train_s, 2),
        passes_per_epoch=flops.passes_per_epoch(
            len(x),
            spec["batch_size"],
            wrap_full["n"],
            wrap_full["repetition"],
            wrap_full["batch_repetition"],
        ),
        train_flops=train_flops,
        train_flops_x=train_flops / plain_train,
        curve=curve,
        evaluations={},
    )
    for inference in arm_spec.get("inference", ("replicate",)):
        scored = models
        if inference != "replicate":
            scored = [build(config, wrap_args, seed, inference=inference)]
            scored[0].set_weights(models[0].get_weights())
        infer = len(models) * flops.inference_flops_per_sample(scored[0], wrap_full["n"], inference)
        val_probs, _ = predict(scored, x_val)
        test_probs, predict_s = predict(scored, x_test)
        record["evaluations"][inference] = dict(
            val=score(val_probs, y_val),
            test=score(test_probs, y_test),
            infer_flops=infer,
            infer_flops_x=infer / plain_fwd,
            predict_s_per_1000=round(1000 * predict_s / len(x_test), 4),
        )
    record.update(
        backend=keras.backend.backend(),
        keras=keras.__version__,
        device=options.device,
        date=datetime.date.today().isoformat(),
    )
    return record


# ---------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------


def job_key(job):
    return "|".join(str(job[k]) for k in ("config", "phase", "arm", "seed", "budget", "fraction"))


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


def queue(options, records):
    """Jobs in order; None entries stand for jobs whose budget is not chosen yet."""
    jobs = []
    budget_jobs = {config: [] for config in options.configs}
    # Seed 0 of the priority arms, per configuration, in the order named.
    priority = {config: {arm: [] for arm in options.priority_arms} for config in options.configs}
    budget_seeds = 1 if options.quick else BUDGET_SEEDS
    for config in options.configs:
        if "budget_from" in CONFIGS[config]:
            continue
        grid = (1,) if options.quick else CONFIGS[config]["budgets"]
        for seed in range(budget_seeds):
            for budget in grid:
                budget_jobs[config].append(
                    dict(
                        config=config,
                        phase="budget",
                        arm="plain",
                        seed=seed,
                        budget=budget,
                        fraction=1.0,
                        epochs=budget,
                    )
                )
    for phase in ("arms", "data"):
        for seed in range(options.seeds or max(CONFIGS[c]["seeds"] for c in options.configs)):
            for config in options.configs:
                spec = CONFIGS[config]
                if seed >= (options.seeds or spec["seeds"]):
                    continue
                if phase == "data" and not (
                    spec.get("data_efficiency") and "data" in options.phases and seed < DATA_SEEDS
                ):
                    continue
                if phase == "arms" and "arms" not in options.phases:
                    continue
                budget = (
                    1 if options.quick else choose_budget(records, spec.get("budget_from", config))
                )
                fractions = spec.get("data_fractions", DATA_FRACTIONS)
                fractions = (1.0,) if phase == "arms" else fractions[: 1 if options.quick else None]
                for fraction in fractions:
                    for arm in arms_of(config, phase, options.arms):
                        first = phase == "arms" and seed == 0 and arm in priority[config]
                        target = priority[config][arm] if first else jobs
                        if budget is None:
                            target.append(None)
                            continue
                        samples = options.samples.get(spec["data"])
                        epochs = epochs_for(arm, config, budget, samples) if samples else budget
                        # Equal optimizer steps on a fraction of the data.
                        epochs = round(epochs / fraction)
                        target.append(
                            dict(
                                config=config,
                                phase=phase,
                                arm=arm,
                                seed=seed,
                                budget=budget,
                                fraction=fraction,
                                epochs=epochs,
                            )
                        )
    front = []
    for config in options.configs:
        front += budget_jobs[config]
        front += [job for arm in options.priority_arms for job in priority[config][arm]]
    return front + jobs


def claim(claims, key):
    try:
        os.close(
            os.open(Path(claims) / key.replace("|", "_").replace("/", "-"), os.O_CREAT | os.O_EXCL)
        )
        return True
    except FileExistsError:
        return False


def run_worker(options, worker):
    cache = {}
    done = 0
    while True:
        if options.deadline and time.time() > options.deadline:
            print(f"[worker {worker}] deadline reached after {done} runs", flush=True)
            return
        records = load_records(options.records)
        jobs = queue(options, records)
        todo = [j for j in jobs if j is not None and job_key(j) not in records]
        waiting = any(j is None for j in jobs)
        job = next((j for j in todo if claim(options.claims, job_key(j))), None)
        if job is None:
            if not waiting:
                return
            time.sleep(5)
            continue
        name = CONFIGS[job["config"]]["data"]
        if name not in cache:
            cache[name] = load_data(name, options)
        record = run(job, config_data(job["config"], cache[name], options), options)
        record["key"] = job_key(job)
        with open(options.records, "a") as f:
            f.write(json.dumps(record) + "\n")
        done += 1
        ev = record["evaluations"]
        first = next(iter(ev.values()))
        print(
            f"[worker {worker}] {record['key']}: {record['epochs']} epochs, "
            f"val acc {first['val']['acc']:.4f}, test acc {first['test']['acc']:.4f}, "
            f"nll {first['test']['nll']:.4f}, train x{record['train_flops_x']:.2f}, "
            f"{record['train_s']:.0f} s",
            flush=True,
        )


def sample_counts(options):
    """Training-set sizes per dataset, for the FLOP-matched epoch factors."""
    if options.quick:
        return {"mnist1d": 96, "digits": 96, "fashion": 96}
    sizes = {"mnist1d": 3200, "digits": 1077, "fashion": options.fashion_train}
    return sizes


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma-separated subset of {','.join(CONFIGS)}",
    )
    p.add_argument("--phases", default="budget,arms,data")
    p.add_argument(
        "--arms",
        default="",
        help="comma-separated arms to run (default: each configuration's own)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per configuration (default: the configuration's own)",
    )
    p.add_argument(
        "--fashion-train",
        type=int,
        default=10000,
        help="Fashion-MNIST training images (of the 50,000 left after validation)",
    )
    p.add_argument("--fashion-dir", default=datasets.FASHION_MNIST_PATH)
    p.add_argument("--records", default=str(ROOT / "docs" / "results" / "fair.jsonl"))
    p.add_argument("--report", default=str(ROOT / "docs" / "FAIR.md"))
    p.add_argument("--cache", default=str(ROOT / "docs" / "results" / "cache"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds from now after which no new run starts",
    )
    p.add_argument("--device", default=f"{platform.machine()} CPU")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--priority-arms",
        default="",
        help="comma-separated arms whose seed-0 runs come right after their "
        "configuration's budget runs (default: none, seed-major order)",
    )
    p.add_argument("--quick", action="store_true", help="one epoch on tiny random data, 1 seed")
    options = p.parse_args(argv)
    options.configs = [c for c in options.configs.split(",") if c]
    options.phases = [c for c in options.phases.split(",") if c]
    options.priority_arms = [a for a in options.priority_arms.split(",") if a]
    options.arms = [a for a in options.arms.split(",") if a]
    if set(options.arms) - set(ARMS):
        p.error(
            f"unknown arms {sorted(set(options.arms) - set(ARMS))} in --arms; "
            f"choose from {', '.join(ARMS)}"
        )
    if set(options.priority_arms) - set(ARMS):
        p.error(
            f"unknown arms {sorted(set(options.priority_arms) - set(ARMS))} in "
            f"--priority-arms; choose from {', '.join(ARMS)}"
        )
    unknown = set(options.configs) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configurations {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    if options.quick:
        options.seeds = 1
    options.samples = sample_counts(options)
    return options


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse(argv)
    Path(options.records).parent.mkdir(parents=True, exist_ok=True)
    if options.worker is not None:
        run_worker(options, options.worker)
        return
    if not options.report_only:
        claims = tempfile.mkdtemp(prefix="fair-claims-")
        deadline = (
            [] if options.deadline is None else ["--deadline", str(time.time() + options.deadline)]
        )
        rest = [
            a
            for i, a in enumerate(argv)
            if a != "--deadline" and (i == 0 or argv[i - 1] != "--deadline")
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, *rest, *deadline, "--worker", str(i), "--claims", claims]
            )
            for i in range(options.workers)
        ]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            raise SystemExit(f"a worker failed with exit codes {codes}")
    from experiments import fair_report

    fair_report.write(load_records(options.records), options, argv)


if __name__ == "__main__":
    main()
