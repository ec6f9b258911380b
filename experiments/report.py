"""Writes docs/EARLIER_STUDIES.md and its plots from the records of `reproduce.py`."""

import json
import platform
from pathlib import Path

import keras
import numpy as np

from experiments import datasets
from experiments import records as study

CONCLUSION = Path(__file__).with_name("conclusion.md")


def mean_std(values, scale=100.0, digits=1):
    values = np.asarray(values, dtype=float) * scale
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def runs_by_config(records, phase, dataset="mnist1d"):
    groups = {}
    for r in records:
        if r["phase"] == phase and r["dataset"] == dataset:
            key = (r["n"], r["width"], r["repetition"], r["fraction"])
            groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items()))


def at(runs, epoch, split="test", metric="acc"):
    points = [study.checkpoint(r, epoch) for r in runs]
    return [p[split][metric] for p in points if p is not None]


def seconds_per_epoch(runs):
    return np.mean([r["checkpoints"][-1]["train_s"] / r["checkpoints"][-1]["epoch"] for r in runs])


def label(n, width, repetition=0.0):
    if repetition:
        return f"n={n}, width={width:g}, repetition {repetition:g}"
    return "plain" if n == 1 and width == 1 else f"n={n}, width={width:g}"


def grid_table(groups, epochs):
    lines = [
        f"| recipe | params | s/epoch | acc @ {epochs} ep (equal epochs) | acc @ n x {epochs} ep "
        "(equal compute) | best acc, any length (by val) | NLL @ n x ep | ECE (%) @ n x ep |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (n, width, repetition, _), runs in groups.items():
        final = epochs * n
        best_epoch = best_length(runs)
        lines.append(
            f"| {label(n, width, repetition)} | {runs[0]['params']:,} | "
            f"{seconds_per_epoch(runs):.2f} | "
            f"{mean_std(at(runs, epochs))} | {mean_std(at(runs, final))} | "
            f"{mean_std(at(runs, best_epoch))} ({best_epoch} ep) | "
            f"{mean_std(at(runs, final, metric='nll'), 1, 3)} | "
            f"{mean_std(at(runs, final, metric='ece'))} |"
        )
    return lines


def best_length(runs):
    epochs = [p["epoch"] for p in runs[0]["checkpoints"]]
    return max(epochs, key=lambda e: np.mean(at(runs, e, "val")))


def length_table(groups, epochs):
    lengths = [epochs * k for k in range(1, 5)]
    lines = [
        "| recipe | " + " | ".join(f"{e} ep" for e in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for (n, width, _, _), runs in groups.items():
        cells = [mean_std(at(runs, e)) if at(runs, e) else "-" for e in lengths]
        lines.append(f"| {label(n, width)} | " + " | ".join(cells) + " |")
    return lines


def protocol_table(groups, epochs):
    lines = [
        "| recipe | replicate acc | contextual acc | batched (group) acc | replicate NLL | "
        "contextual NLL | batched NLL |",
        "|---|---|---|---|---|---|---|",
    ]
    for (n, width, _, _), runs in groups.items():
        if n == 1:
            continue
        cells = [mean_std([r["protocols"][p]["acc"] for r in runs]) for p in study.PROTOCOLS]
        cells += [mean_std([r["protocols"][p]["nll"] for r in runs], 1, 3) for p in study.PROTOCOLS]
        lines.append(f"| {label(n, width)} | " + " | ".join(cells) + " |")
    return lines


def plot_grid(groups, epochs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    ns = sorted({n for n, *_ in groups})
    for ax, title, length in (
        (axes[0], f"equal epochs ({epochs})", lambda n: epochs),
        (axes[1], "equal compute (n x epochs)", lambda n: epochs * n),
    ):
        for n in ns:
            items = [(w, runs) for (n_, w, _, _), runs in groups.items() if n_ == n]
            widths = [w for w, _ in items]
            means = [100 * np.mean(at(runs, length(n))) for _, runs in items]
            stds = [100 * np.std(at(runs, length(n))) for _, runs in items]
            ax.errorbar(widths, means, yerr=stds, marker="o", capsize=3, label=f"n={n}")
        ax.set_title(title)
        ax.set_xlabel("width multiplier")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_length(groups, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({w for _, w, *_ in groups})
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, width in zip(axes, widths):
        for (n, w, _, _), runs in groups.items():
            if w != width:
                continue
            epochs = [p["epoch"] for p in runs[0]["checkpoints"]]
            means = [100 * np.mean(at(runs, e)) for e in epochs]
            ax.plot(epochs, means, marker=".", label=f"n={n}")
        ax.set_title(f"width {width:g}")
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def data_rows(records, options, best_plain, best_agr):
    """(fraction, plain runs, AgrLearn runs, plain length, AgrLearn length) per fraction."""
    rows = []
    data = runs_by_config(records, "data")
    grid = runs_by_config(records, "grid")
    for fraction in sorted(options.fractions):
        if fraction >= 1:
            plain = grid.get((*best_plain, 0.0, 1.0), [])
            agr = grid.get((*best_agr, 0.0, 1.0), [])
            epochs = options.epochs
        else:
            plain = data.get((*best_plain, 0.0, fraction), [])
            agr = data.get((*best_agr, 0.0, fraction), [])
            epochs = int(round(options.epochs / fraction))
        if plain or agr:
            rows.append((fraction, plain, agr, epochs))
    return rows


def plot_data(rows, best_agr, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = best_agr[0]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    fractions = [100 * f for f, *_ in rows]
    for name, pick, length in (
        ("plain, equal compute", 1, lambda e: e),
        ("plain, equal epochs", 1, lambda e: e * n),
        (f"AgrLearn {label(*best_agr)}", 2, lambda e: e * n),
    ):
        values = [at(row[pick], length(row[3])) for row in rows]
        ax.errorbar(
            fractions,
            [100 * np.mean(v) for v in values],
            yerr=[100 * np.std(v) for v in values],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g}%" for f in fractions])
    ax.set_xlabel("share of the training data")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EARLIER_NOTE = (
    "These studies compare AgrLearn with its backbone at equal epochs or equal forward passes, "
    "not at equal FLOPs: a wider aggregated network costs more per pass, and the plain models "
    "were not trained to convergence. They are kept as a record; the compute-fair study "
    "([RESULTS.md](RESULTS.md), [FAIR.md](FAIR.md)) supersedes their conclusions."
)


def write(records, options, argv):
    """Writes EARLIER_STUDIES.md, its plots and the raw records to `options.out`."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    best_plain, best_agr = study.best_recipes(records, "grid", num_samples=options.num_samples)
    sections = (
        header_section(options, argv),
        grid_section(records, options, best_plain, best_agr, out),
        repetition_section(records, options, best_plain, best_agr),
        data_section(records, options, best_plain, best_agr, out),
        large_section(records, options),
        digits_section(records, options),
        raw_section(),
    )
    lines = ["# Earlier studies: AgrLearn at equal epochs or forward passes", "", EARLIER_NOTE, ""]
    for section in sections:
        lines += section
    (out / "EARLIER_STUDIES.md").write_text("\n".join(lines))
    raw = out / "results"
    raw.mkdir(exist_ok=True)
    (raw / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def header_section(options, argv):
    """The conclusion (full studies only) and how the numbers were produced."""
    lines = []
    if CONCLUSION.exists() and not options.quick:
        lines += [CONCLUSION.read_text().strip(), ""]
    command = "KERAS_BACKEND=jax python experiments/reproduce.py " + " ".join(
        a for a in argv if a != "--report-only"
    )
    return lines + [
        "## How this was produced",
        "",
        "```",
        command.strip(),
        "```",
        "",
        f"Keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.machine()} CPU. Every number is a mean ± sample standard "
        f"deviation over {options.seeds} seeds; accuracies in %. The model is "
        "trained with Adam (lr "
        f"{options.lr:g}), batch {options.batch_size}, softmax cross-entropy; "
        "training groups are re-drawn every epoch (Keras shuffles each epoch). "
        "Unless a table says otherwise, AgrLearn uses replicated inference. "
        "`s/epoch` is the wall-clock of the machine a run happened to use (a "
        "shared 2-core VM under load, or one core of an idle 16-core server): "
        'it is no speed measurement (see BENCHMARKS.md). "Best ... (by val)" '
        "choices use the validation split, never the test split.",
        "",
    ]


def grid_section(records, options, best_plain, best_agr, out):
    """MNIST-1D n x width: the grid table, training length, test protocols."""
    grid = runs_by_config(records, "grid")
    e = options.epochs
    lines = []
    if grid:
        (x, _), (xv, _), (xt, _) = datasets.load_mnist1d(
            options.num_samples, Path(options.records) / "cache"
        )
        lines += [
            "## MNIST-1D: n x width",
            "",
            f"MNIST-1D generated offline (`mnist1d`, {options.num_samples} samples: "
            f"{len(x)} train, {len(xv)} validation, {len(xt)} test), a 3-layer "
            f"Conv1D backbone with {options.channels} channels (stride 2, ReLU), "
            "flatten, softmax head. `width` multiplies every hidden width; "
            "`n=1, width>1` is the widened plain network, the capacity-matched "
            f"baseline. Equal epochs: {e} epochs for everyone. Equal compute: an "
            f"n-fold model trains n x {e} epochs, the same number of forward "
            f"passes as the plain net's {e} epochs (it sees each sample n x {e} "
            "times, in a different group each epoch). Plain nets were trained "
            f"{max(options.ns) * e} epochs; the `best acc, any length` column "
            "gives each recipe its best checkpoint by validation accuracy.",
            "",
            *grid_table(grid, e),
            "",
            f"Best plain recipe by validation: {label(*best_plain)}; best AgrLearn "
            f"recipe (equal compute): {label(*best_agr)}.",
            "",
            "![grid](grid.png)",
            "",
            "### Training length",
            "",
            *length_table(grid, e),
            "",
            "![training length](training_length.png)",
            "",
            "### The three test protocols",
            "",
            "The same trained weights scored three ways: replicated (the sample in "
            "all n slots, logits averaged), contextual (the sample among random "
            "companions from the test batch, 4 draws averaged) and batched "
            "(n test samples per forward pass, in test-set order).",
            "",
            *protocol_table(grid, e),
            "",
        ]
        plot_grid(grid, e, out / "grid.png")
        plot_length(grid, out / "training_length.png")
    return lines


def repetition_section(records, options, best_plain, best_agr):
    """MIMO-style input repetition against the plain net at equal passes."""
    grid = runs_by_config(records, "grid")
    e = options.epochs
    lines = []
    rep = runs_by_config(records, "repetition")
    if rep and best_agr:
        recipes = sorted({(k[0], k[1]) for k in rep})
        lines += [
            "## MIMO-style input repetition",
            "",
            "A share r of each training batch fills all n slots of a group with "
            "one sample. A batch of B samples then makes (r + (1 - r) / n) B "
            "forward passes instead of B / n, so a run of n x "
            f"{e} epochs costs (r + (1 - r) / n) x n x {e} plain epochs; the last "
            "columns give the plain network of the same width at that many "
            "epochs (equal forward passes). Share 0 is the grid's run.",
            "",
            "| recipe | repetition | replicate acc | contextual acc | batched acc | NLL "
            "| ECE (%) | plain epochs | plain acc | plain NLL | plain ECE (%) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n, width in recipes:
            base = grid.get((n, width, 0.0, 1.0), [])
            plain = grid.get((1, width, 0.0, 1.0)) or grid.get((*best_plain, 0.0, 1.0), [])
            shares = [(0.0, base)] + [
                (k[2], v) for k, v in rep.items() if (k[0], k[1]) == (n, width)
            ]
            for share, runs in shares:
                if not runs:
                    continue
                cells = [
                    mean_std([r["protocols"][p]["acc"] for r in runs]) for p in study.PROTOCOLS
                ]
                cells += [
                    mean_std([r["protocols"]["replicate"]["nll"] for r in runs], 1, 3),
                    mean_std([r["protocols"]["replicate"]["ece"] for r in runs]),
                ]
                epochs = int(round((share + (1 - share) / n) * n * e))
                cells += [
                    str(epochs),
                    mean_std(at(plain, epochs)),
                    mean_std(at(plain, epochs, metric="nll"), 1, 3),
                    mean_std(at(plain, epochs, metric="ece")),
                ]
                lines.append(f"| {label(n, width)} | {share:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def data_section(records, options, best_plain, best_agr, out):
    """Test accuracy against the share of training data."""
    e = options.epochs
    lines = []
    rows = data_rows(records, options, best_plain, best_agr) if best_agr else []
    if any(f < 1 for f, *_ in rows):
        n = best_agr[0]
        lines += [
            "## Data efficiency",
            "",
            f"A random share of the training set (same subset for both models per "
            f"seed). With a share f, an epoch has f times fewer steps, so the "
            f"equal-epochs length is {e}/f epochs (the same number of steps as "
            f"{e} full-data epochs). Plain: {label(*best_plain)}; AgrLearn: "
            f"{label(*best_agr)} trained n x that length.",
            "",
            "| share | epochs | plain, equal compute | plain, equal epochs | "
            f"AgrLearn {label(*best_agr)} | plain NLL | AgrLearn NLL |",
            "|---|---|---|---|---|---|---|",
        ]
        for fraction, plain, agr, epochs in rows:
            lines.append(
                f"| {fraction:.0%} | {epochs} / {epochs * n} | {mean_std(at(plain, epochs))} | "
                f"{mean_std(at(plain, epochs * n))} | {mean_std(at(agr, epochs * n))} | "
                f"{mean_std(at(plain, epochs, metric='nll'), 1, 3)} | "
                f"{mean_std(at(agr, epochs * n, metric='nll'), 1, 3)} |"
            )
        lines += ["", "![data efficiency](data_efficiency.png)", ""]
        plot_data(rows, best_agr, out / "data_efficiency.png")
    return lines


def large_section(records, options):
    """The best recipes on a larger generated MNIST-1D."""
    e = options.epochs
    lines = []
    large = runs_by_config(records, "large")
    if large:
        lines += [
            f"## Larger MNIST-1D ({options.large_samples} samples)",
            "",
            *grid_table(large, e),
            "",
        ]
    return lines


def digits_section(records, options):
    """The grid on scikit-learn digits."""
    lines = []
    digits = runs_by_config(records, "digits", "digits")
    if digits:
        lines += [
            "## scikit-learn digits",
            "",
            "1797 8x8 images (1077 train, 360 validation, 360 test), Conv2D("
            f"{options.digits_channels}) + Conv2D({2 * options.digits_channels}, "
            "stride 2), flatten, softmax; batch 32.",
            "",
            *grid_table(digits, options.digits_epochs),
            "",
        ]
    return lines


def raw_section():
    """Where the raw records are."""
    return [
        "## Raw records",
        "",
        "One JSON line per run (every checkpoint's validation and test accuracy, "
        "NLL and ECE) in `docs/results/records.jsonl`.",
        "",
    ]
