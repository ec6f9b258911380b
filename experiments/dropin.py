"""Drop-in study: a plain classifier and `wrap(model, n=3)` with the same `fit` call.

A user inserts `model = keras_agrlearn.wrap(model, n=3)` into a working
training script and changes nothing else: same optimizer, loss, batch size
and epochs. This study measures what that does, per backbone and seed:

    KERAS_BACKEND=jax python experiments/dropin.py --phases select,fashion

- `select`: candidate defaults (batch repetition, input repetition, training
  objective, width) on MNIST-1D (Conv1D at 32 and 64 channels) and
  scikit-learn digits (a small CNN). The candidate that holds the target on
  most datasets *on the validation split* is the one to make `wrap`'s
  default.
- `fashion`: Fashion-MNIST (IDX files of Debian's `dataset-fashion-mnist`)
  with the tutorials' small convnet and a small ResNet: the plain model
  against `wrap(model, n=3)` with the library's defaults as they are when
  the run starts (the record keeps the resolved settings).
- `defaults`: the plain model and the defaults as they are now on MNIST-1D,
  digits and the Fashion-MNIST ResNet, meant to run alone on the machine into
  records of their own (`--records`, `--report`), for training times that
  load does not distort.

Target: test NLL at or below the plain model's and accuracy at most 0.3
points below it. Every run records accuracy, NLL and ECE (validation and
test), its training wall time and its forward passes per epoch (groups the
network sees: the plain model sees one sample per pass). The study engine
(`experiments/study.py`) runs the queue: a run whose record (keyed
workflow|candidate|seed|fashion_train|epochs) is in `--records` is not
trained again, and `--report-only` rewrites the page from the records. The
page is named after the records and goes to the folder above theirs:
`docs/results/dropin.jsonl` gives `docs/DROPIN.md`,
`docs/results/dropin-defaults.jsonl` gives `docs/DROPIN_DEFAULTS.md`.
"""

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
from experiments import study  # noqa: E402
from experiments.flops import passes_per_epoch  # noqa: E402
from experiments.scoring import scores  # noqa: E402
from experiments.tables import markdown_table  # noqa: E402
from experiments.tables import shown_path  # noqa: E402
from experiments.tables import write_page  # noqa: E402
from keras_agrlearn import _keras_internals  # noqa: E402

PHASES = ("select", "fashion", "fashion-slots", "defaults")
SQRT3 = round(math.sqrt(3), 2)

# Each workflow: the data, the user's backbone and the user's own fit call.
WORKFLOWS = {
    "mnist1d-32": dict(
        data="mnist1d", backbone=lambda: backbones.mnist1d_conv1d(32), epochs=20, batch_size=96
    ),
    "mnist1d-64": dict(
        data="mnist1d", backbone=lambda: backbones.mnist1d_conv1d(64), epochs=20, batch_size=96
    ),
    "digits-cnn": dict(
        data="digits", backbone=lambda: backbones.digits_cnn(16), epochs=30, batch_size=32
    ),
    "fashion-convnet": dict(
        data="fashion", backbone=backbones.fashion_convnet, epochs=8, batch_size=128
    ),
    "fashion-resnet": dict(
        data="fashion", backbone=backbones.small_resnet, epochs=5, batch_size=128
    ),
}

# `wrap` arguments of each candidate; None is the plain model.
CANDIDATES = {
    "plain": None,
    # wrap's defaults when this study ran (0.x), spelled out: the library's
    # defaults have changed since.
    "defaults": dict(width=SQRT3, batch_repetition=3, repetition=0.5, objective="mean"),
    "b1-r0.5-mean": dict(batch_repetition=1, repetition=0.5, objective="mean"),
    "b3-r0.5-mean": dict(batch_repetition=3, repetition=0.5, objective="mean"),
    "b3-r0.5-slots": dict(batch_repetition=3, repetition=0.5, objective="slots"),
    "b3-r0-slots": dict(batch_repetition=3, repetition=0.0, objective="slots"),
    f"b3-r0.5-slots-w{SQRT3}": dict(
        batch_repetition=3, repetition=0.5, objective="slots", width=SQRT3
    ),
    f"b3-r0.5-mean-w{SQRT3}": dict(
        batch_repetition=3, repetition=0.5, objective="mean", width=SQRT3
    ),
    f"b2-r0.5-mean-w{SQRT3}": dict(
        batch_repetition=2, repetition=0.5, objective="mean", width=SQRT3
    ),
}
PHASE_RUNS = {
    "select": [
        (w, c)
        for w in ("mnist1d-32", "mnist1d-64", "digits-cnn")
        for c in CANDIDATES
        if c != "defaults"
    ],
    "fashion": [
        (w, c) for w in ("fashion-convnet", "fashion-resnet") for c in ("plain", "defaults")
    ],
    # The runner-up of the selection, scoring each slot: the defaults' mean
    # objective lost NLL on the Fashion-MNIST convnet.
    "fashion-slots": [("fashion-convnet", f"b3-r0.5-slots-w{SQRT3}")],
    # The plain model and the library's defaults as they are now, on the
    # selection workflows and the ResNet: run alone (nothing else on the
    # machine) into their own records, for train-time ratios next to the
    # accuracies.
    "defaults": [
        (w, c)
        for w in ("mnist1d-32", "mnist1d-64", "digits-cnn", "fashion-resnet")
        for c in ("plain", "defaults")
    ],
}


def load(name, options):
    if name == "mnist1d":
        return datasets.load_mnist1d(15000, Path(options.records).parent / "cache")
    if name == "digits":
        return datasets.load_digits()
    return datasets.load_fashion_mnist(train_size=options.fashion_train)


def settings(model):
    """The resolved AgrLearn settings of a wrapped model (None: plain)."""
    layers = [
        layer
        for layer in _keras_internals.sublayers(model)
        if isinstance(layer, keras_agrlearn.Aggregate)
    ]
    if not layers:
        return None
    aggregate = layers[0]
    objective = next(
        layer.objective
        for layer in _keras_internals.sublayers(model)
        if isinstance(layer, keras_agrlearn.Deaggregate)
    )
    return {
        "n": aggregate.n,
        "repetition": aggregate.repetition,
        "batch_repetition": aggregate.batch_repetition,
        "objective": objective,
        "inference": aggregate.inference,
    }


def train(workflow, candidate, seed, data, options):
    """Trains one candidate on one workflow with the user's own fit call; its record."""
    spec = WORKFLOWS[workflow]
    (x, y), (x_val, y_val), (x_test, y_test) = data
    if options.quick:
        x, y = x[:256], y[:256]
    epochs = 1 if options.quick else spec["epochs"]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = spec["backbone"]()
    args = CANDIDATES[candidate]
    if args is not None:
        model = keras_agrlearn.wrap(model, n=3, seed=seed, **args)
    # The user's own compile and fit, identical for every candidate.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=spec["batch_size"], epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    resolved = settings(model)
    width = 1.0 if args is None else args.get("width", round(math.sqrt(3), 2))
    passes = (
        len(x)
        if resolved is None
        else passes_per_epoch(
            len(x),
            spec["batch_size"],
            resolved["n"],
            resolved["repetition"],
            resolved["batch_repetition"],
        )
    )
    return {
        "workflow": workflow,
        "candidate": candidate,
        "seed": seed,
        "epochs": epochs,
        "batch_size": spec["batch_size"],
        "train_samples": len(x),
        "settings": resolved,
        "width": width,
        "params": int(model.count_params()),
        "train_s": round(seconds, 2),
        "forward_passes_per_epoch": passes,
        "val": scores(model, x_val, y_val),
        "test": scores(model, x_test, y_test),
    }


def queue(options, records):
    """The runs of the chosen phases in order, each once."""
    jobs = {}
    for phase in options.phases:
        for workflow, candidate in PHASE_RUNS[phase]:
            for seed in range(options.seeds):
                job = dict(
                    workflow=workflow,
                    candidate=candidate,
                    seed=seed,
                    fashion_train=options.fashion_train,
                    epochs=1 if options.quick else WORKFLOWS[workflow]["epochs"],
                )
                jobs.setdefault(STUDY.key_of(job), job)
    return list(jobs.values())


# Datasets a worker has loaded, by name.
_loaded = {}


def run(job, options):
    name = WORKFLOWS[job["workflow"]]["data"]
    if name not in _loaded:
        _loaded[name] = load(name, options)
    return train(job["workflow"], job["candidate"], job["seed"], _loaded[name], options)


def describe_run(record):
    return (
        f"{record['workflow']} {record['candidate']} seed {record['seed']}: "
        f"test acc {record['test']['acc']:.4f} nll {record['test']['nll']:.4f} "
        f"({record['train_s']:.0f} s)"
    )


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def summary(records, workflow, candidate):
    runs = [r for r in records if r["workflow"] == workflow and r["candidate"] == candidate]
    if not runs:
        return None

    def stat(split, metric):
        values = [r[split][metric] for r in runs]
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    return {
        "runs": runs,
        "seeds": len(runs),
        **{f"{s}_{m}": stat(s, m) for s in ("val", "test") for m in ("acc", "nll", "ece")},
        "train_s": float(np.median([r["train_s"] for r in runs])),
        "passes": runs[0]["forward_passes_per_epoch"],
        "samples": runs[0]["train_samples"],
        "settings": runs[0]["settings"],
        "width": runs[0]["width"],
    }


def meets(candidate, plain, split):
    """The target: NLL at or below plain, accuracy at most 0.3 points below."""
    return (
        candidate[f"{split}_nll"][0] <= plain[f"{split}_nll"][0]
        and candidate[f"{split}_acc"][0] >= plain[f"{split}_acc"][0] - 0.003
    )


def describe(s):
    if s["settings"] is None:
        return "plain"
    st = s["settings"]
    return (
        f"n={st['n']}, b={st['batch_repetition']}, r={st['repetition']:g}, "
        f"{st['objective']}, width {s['width']:g}"
    )


def table(records, workflows, candidates):
    header = [
        "workflow",
        "model",
        "settings",
        "test accuracy %",
        "test NLL",
        "test ECE %",
        "target met (test / val)",
        "forward passes / epoch",
        "train s (median)",
    ]
    rows = []
    for workflow in workflows:
        plain = summary(records, workflow, "plain")
        for candidate in candidates:
            s = summary(records, workflow, candidate)
            if s is None:
                continue
            target = (
                ""
                if candidate == "plain" or plain is None
                else (
                    f"{'yes' if meets(s, plain, 'test') else 'no'} / "
                    f"{'yes' if meets(s, plain, 'val') else 'no'}"
                )
            )
            ratio = "" if plain is None else f" ({s['passes'] / plain['passes']:.2f} x)"
            time_ratio = "" if plain is None else f" ({s['train_s'] / plain['train_s']:.2f} x)"
            rows.append(
                [
                    workflow,
                    candidate,
                    describe(s),
                    f"{100 * s['test_acc'][0]:.2f} ± {100 * s['test_acc'][1]:.2f}",
                    f"{s['test_nll'][0]:.4f} ± {s['test_nll'][1]:.4f}",
                    f"{100 * s['test_ece'][0]:.2f}",
                    target,
                    f"{s['passes']}{ratio}",
                    f"{s['train_s']:.0f}{time_ratio}",
                ]
            )
    return markdown_table(header, rows)


def selection(records):
    """Candidates ranked by validation targets met, then mean val NLL ratio."""
    rows = []
    workflows = [w for w, _ in PHASE_RUNS["select"]]
    for candidate in CANDIDATES:
        if candidate in ("plain", "defaults"):
            continue
        met, ratios = 0, []
        for workflow in dict.fromkeys(workflows):
            plain, s = summary(records, workflow, "plain"), summary(records, workflow, candidate)
            if plain is None or s is None:
                continue
            met += meets(s, plain, "val")
            ratios.append(s["val_nll"][0] / plain["val_nll"][0])
        if ratios:
            rows.append((candidate, met, len(ratios), float(np.mean(ratios))))
    rows.sort(key=lambda row: (-row[1], row[3]))
    return rows


def fashion_samples(records):
    sizes = {r["train_samples"] for r in records if r["workflow"].startswith("fashion")}
    return ", ".join(str(size) for size in sorted(sizes))


def environment(records):
    """Keras versions, backends and devices of the records, as the page states them."""
    kerases = sorted({r["keras"] for r in records if "keras" in r})
    backends = sorted({r["backend"] for r in records if "backend" in r})
    devices = sorted({r["device"] for r in records if "device" in r})
    text = f"Keras {', '.join(kerases) or '?'}, backend {', '.join(backends) or '?'}"
    return text + "".join(f", {device}" for device in devices), backends


def write_report(records, options, argv):
    """Writes `options.report` from the records by key (nothing but the records and argv)."""
    records = list(records.values())
    where, backends = environment(records)
    backend = f"KERAS_BACKEND={backends[0]} " if len(backends) == 1 else ""
    lines = [
        "# Drop-in study: the same `fit` call for the plain model and `wrap(model, n=3)`",
        "",
        "Produced by:",
        "",
        "```",
        backend + study.page_command("dropin", argv),
        "```",
        "",
        f"{where} (a shared 2-core VM: train times are indicative; "
        "their ratios matter). Mean ± sample standard deviation over seeds; every "
        "model gets the user's own `compile(optimizer='adam', "
        "loss='sparse_categorical_crossentropy')` and the same `fit(x, y, "
        "batch_size, epochs)`. Forward passes per epoch count the groups the "
        "network sees (the plain model: one per sample); with width w the "
        "hidden layers cost about w² as much per pass. Target: NLL at or below "
        "plain, accuracy at most 0.3 points below.",
        "",
        "Workflows: "
        + "; ".join(
            f"`{w}` ({spec['epochs']} epochs, batch {spec['batch_size']})"
            for w, spec in WORKFLOWS.items()
        )
        + ". Fashion-MNIST: "
        f"{fashion_samples(records) or options.fashion_train} training images (of the "
        "50,000 left after a 10,000-image validation split), the full "
        "10,000-image test set.",
        "",
    ]
    ranking = selection(records)
    small = [w for w in WORKFLOWS if not w.startswith("fashion")]
    if any(r["workflow"] in small for r in records):
        lines += [
            "## Selection of the defaults (MNIST-1D, digits)"
            if ranking
            else "## MNIST-1D and digits",
            "",
            *table(records, small, CANDIDATES),
            "",
        ]
    if ranking:
        lines += [
            "Ranking on the validation split (targets met, mean NLL relative to plain):",
            "",
            *markdown_table(
                ["candidate", "targets met (val)", "mean val NLL / plain"],
                [[c, f"{met} of {count}", f"{ratio:.3f}"] for c, met, count, ratio in ranking],
            ),
            "",
        ]
    if any(r["workflow"].startswith("fashion") for r in records):
        lines += [
            "## Fashion-MNIST",
            "",
            *table(records, [w for w in WORKFLOWS if w.startswith("fashion")], CANDIDATES),
            "",
        ]
    lines += [f"Raw records: `{shown_path(options.records, ROOT)}`.", ""]
    write_page(options.report, lines)


def add_arguments(p):
    p.add_argument(
        "--phases", default="select,fashion", help=f"comma-separated subset of {','.join(PHASES)}"
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--fashion-train",
        type=int,
        default=20000,
        help="Fashion-MNIST training images used (at most 50000)",
    )
    p.add_argument(
        "--report",
        default=None,
        help="the page (default: named after the records, in the folder above theirs)",
    )


def finish(options):
    options.phases = [x for x in options.phases.split(",") if x]
    unknown = set(options.phases) - set(PHASES)
    if unknown:
        options.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    if options.quick:
        options.seeds = 1
    if options.report is None:
        records = Path(options.records)
        name = records.stem.upper().replace("-", "_")
        options.report = str(records.parent.parent / f"{name}.md")


STUDY = study.Study(
    name="dropin",
    key_fields=("workflow", "candidate", "seed", "fashion_train", "epochs"),
    jobs=queue,
    run=run,
    report=write_report,
    describe=describe_run,
    add_arguments=add_arguments,
    finish=finish,
    records="docs/results/dropin.jsonl",
)
DESCRIPTION = __doc__.split("\n")[0]


def parse(argv):
    """The options of a command line (the engine's and the study's)."""
    return study.parse(STUDY, argv, DESCRIPTION)


def main(argv=None):
    return study.main(STUDY, argv, DESCRIPTION, __file__)


if __name__ == "__main__":
    main()
