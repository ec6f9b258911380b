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

The configurations and arms are in `experiments/fair_configs.py`, the report
in `experiments/fair_report.py`. The study engine (`experiments/study.py`)
runs the queue: every run is one JSON line in `--records`
(`docs/results/fair.jsonl`), keyed config|phase|arm|seed|budget|fraction; a
run whose key is there is skipped, so the study resumes where it stopped.
Workers (`--workers`) claim runs in queue order. `--deadline` (seconds) stops
claiming new runs after that time, for short machine loans. `--priority-arms`
moves the named arms of seed 0 up to right after their configuration's
budget runs (ahead of the next configuration's), so that the comparison
that matters most lands first on a machine lent for a short time.
"""

import functools
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
from experiments import datasets  # noqa: E402
from experiments import fair_report  # noqa: E402
from experiments import flops  # noqa: E402
from experiments import study  # noqa: E402
from experiments.batches import OrderedBatches  # noqa: E402
from experiments.fair_configs import ARMS  # noqa: E402
from experiments.fair_configs import BUDGET_SEEDS  # noqa: E402
from experiments.fair_configs import CONFIGS  # noqa: E402
from experiments.fair_configs import DATA_FRACTIONS  # noqa: E402
from experiments.fair_configs import DATA_SEEDS  # noqa: E402
from experiments.fair_configs import DEFAULT_CONFIGS  # noqa: E402
from experiments.fair_configs import LEARNING_RATE  # noqa: E402
from experiments.fair_configs import arms_of  # noqa: E402
from experiments.fair_configs import choose_budget  # noqa: E402
from experiments.fair_configs import train_size  # noqa: E402
from keras_agrlearn.metrics import BrierScore  # noqa: E402
from keras_agrlearn.metrics import ExpectedCalibrationError  # noqa: E402
from keras_agrlearn.metrics import NegativeLogLikelihood  # noqa: E402

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


def config_data(config, data, options):
    """The configuration's slice of its dataset (Fashion-MNIST: its training images)."""
    spec = CONFIGS[config]
    if spec["data"] != "fashion" or options.quick:
        return data
    (x, y), validation, test = data
    size = train_size(config, options)
    return (x[:size], y[:size]), validation, test


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


def train(job, data, options):
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
    return record


# ---------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------


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


# Datasets a worker has loaded, by name.
_loaded = {}


def run(job, options):
    """Trains one job of the queue on its configuration's data; returns its record."""
    name = CONFIGS[job["config"]]["data"]
    if name not in _loaded:
        _loaded[name] = load_data(name, options)
    return train(job, config_data(job["config"], _loaded[name], options), options)


def describe(record):
    first = next(iter(record["evaluations"].values()))
    return (
        f"{record['key']}: {record['epochs']} epochs, "
        f"val acc {first['val']['acc']:.4f}, test acc {first['test']['acc']:.4f}, "
        f"nll {first['test']['nll']:.4f}, train x{record['train_flops_x']:.2f}, "
        f"{record['train_s']:.0f} s"
    )


def sample_counts(options):
    """Training-set sizes per dataset, for the FLOP-matched epoch factors."""
    if options.quick:
        return {"mnist1d": 96, "digits": 96, "fashion": 96}
    sizes = {"mnist1d": 3200, "digits": 1077, "fashion": options.fashion_train}
    return sizes


def add_arguments(p):
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
    p.add_argument("--report", default=str(ROOT / "docs" / "FAIR.md"))
    p.add_argument("--cache", default=str(ROOT / "docs" / "results" / "cache"))
    p.add_argument(
        "--priority-arms",
        default="",
        help="comma-separated arms whose seed-0 runs come right after their "
        "configuration's budget runs (default: none, seed-major order)",
    )


def finish(options):
    options.configs = [c for c in options.configs.split(",") if c]
    options.phases = [c for c in options.phases.split(",") if c]
    options.priority_arms = [a for a in options.priority_arms.split(",") if a]
    options.arms = [a for a in options.arms.split(",") if a]
    if set(options.arms) - set(ARMS):
        options.error(
            f"unknown arms {sorted(set(options.arms) - set(ARMS))} in --arms; "
            f"choose from {', '.join(ARMS)}"
        )
    if set(options.priority_arms) - set(ARMS):
        options.error(
            f"unknown arms {sorted(set(options.priority_arms) - set(ARMS))} in "
            f"--priority-arms; choose from {', '.join(ARMS)}"
        )
    unknown = set(options.configs) - set(CONFIGS)
    if unknown:
        options.error(f"unknown configurations {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    if options.quick:
        options.seeds = 1
    options.samples = sample_counts(options)


STUDY = study.Study(
    name="fair",
    key_fields=("config", "phase", "arm", "seed", "budget", "fraction"),
    jobs=queue,
    run=run,
    report=fair_report.write,
    describe=describe,
    add_arguments=add_arguments,
    finish=finish,
    records="docs/results/fair.jsonl",
)
DESCRIPTION = __doc__.split("\n")[0]


def parse(argv):
    """The options of a command line (the engine's and the study's)."""
    return study.parse(STUDY, argv, DESCRIPTION)


def main(argv=None):
    return study.main(STUDY, argv, DESCRIPTION, __file__)


if __name__ == "__main__":
    main()
