"""Writes the uncertainty study's report: a Markdown section and two plots.

`write(records, out)` turns the JSON records of `experiments/uncertainty.py`
into `out/RESULTS_UNCERTAINTY.md` (mean +- std over seeds per dataset and
method), `out/uncertainty_reliability.png` (a reliability diagram per
dataset) and `out/uncertainty_shift.png` (accuracy and NLL against shift
severity). The page says nothing the records do not: it regenerates byte for
byte from them.
"""

from pathlib import Path

import numpy as np

from experiments.tables import markdown_table
from experiments.tables import write_page

DATASETS = ("fashion_mnist", "mnist1d", "digits")
METHODS = ("plain", "agrlearn_default", "agrlearn_best", "ensemble")
LABELS = {
    "plain": "plain",
    "agrlearn_default": "AgrLearn, wrap defaults",
    "agrlearn_best": "AgrLearn, best recipe",
    "ensemble": "deep ensemble",
}
OOD_SCORES = ("entropy", "msp", "mutual_information")
MIN_BIN_SAMPLES = 20


def mean_std(values, digits=3):
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def grouped(records):
    """`{dataset: {method: [records]}}` in the study's order."""
    groups = {}
    for dataset in DATASETS:
        for method in METHODS:
            runs = [r for r in records if r["dataset"] == dataset and r["method"] == method]
            if runs:
                groups.setdefault(dataset, {})[method] = sorted(runs, key=lambda r: r["seed"])
    return groups


def main_table(methods):
    ood_sets = sorted({name for runs in methods.values() for r in runs for name in r["ood"]})
    header = [
        "method",
        "params",
        "train s",
        "infer s",
        "accuracy",
        "NLL",
        "ECE",
        "Brier",
        "member acc",
        "disagreement",
        "MI",
    ]
    for name in ood_sets:
        header += [f"AUROC {name}", f"AUPR {name}", f"FPR95 {name}"]
    rows = []
    for method, runs in methods.items():
        test = lambda key: [r["test"][key] for r in runs if key in r["test"]]  # noqa: E731
        row = [
            LABELS[method],
            f"{runs[0]['params']:,}",
            f"{np.mean([r['train_s'] for r in runs]):.1f}",
            f"{np.mean([r['infer_s'] for r in runs]):.2f}",
        ]
        row += [
            mean_std(test(k))
            for k in (
                "accuracy",
                "nll",
                "ece",
                "brier",
                "member_accuracy",
                "disagreement",
                "mutual_information",
            )
        ]
        for name in ood_sets:
            for key in ("ood_auroc", "ood_aupr", "fpr95"):
                values = [r["ood"][name]["entropy"][key] for r in runs if name in r["ood"]]
                row.append(mean_std(values))
        rows.append(row)
    return markdown_table(header, rows)


def ood_score_table(methods):
    """OOD AUROC by score, for every OOD set."""
    rows = []
    for method, runs in methods.items():
        for name in sorted(runs[0]["ood"]):
            cells = []
            for score in OOD_SCORES:
                values = [
                    r["ood"][name][score]["ood_auroc"]
                    for r in runs
                    if score in r["ood"].get(name, {})
                ]
                cells.append(mean_std(values))
            rows.append([LABELS[method], name, *cells])
    return markdown_table(["method", "OOD set", "entropy", "MSP", "mutual information"], rows)


def shift_curves(runs, name, metric):
    """Mean over seeds of `metric` at severity 0 (clean) to 5."""
    clean = np.mean([r["test"][metric] for r in runs])
    levels = [
        np.mean([r["shift"][name][i][metric] for r in runs])
        for i in range(len(runs[0]["shift"][name]))
    ]
    return [clean] + levels


def shift_table(methods):
    names = sorted({name for runs in methods.values() for name in runs[0]["shift"]})
    if not names:
        return []
    levels = len(next(iter(methods.values()))[0]["shift"][names[0]])
    header = ["method", "shift"] + [f"severity {s}" for s in range(levels + 1)]
    rows = []
    for method, runs in methods.items():
        for name in names:
            accuracy = shift_curves(runs, name, "accuracy")
            nll = shift_curves(runs, name, "nll")
            rows.append(
                [LABELS[method], name, *(f"{a:.3f} / {b:.3f}" for a, b in zip(accuracy, nll))]
            )
    return markdown_table(header, rows)


def summary_table(groups):
    """One row per dataset and method: the headline numbers and costs against plain.

    `AUROC` the near-OOD (held-out classes) entropy AUROC; `shift NLL` the
    mean NLL over every shifted set and severity; costs are the training and
    test-set inference seconds over plain's.
    """
    header = [
        "dataset",
        "method",
        "accuracy",
        "NLL",
        "ECE",
        "Brier",
        "disagreement",
        "AUROC held-out",
        "shift NLL",
        "train cost",
        "inference cost",
    ]
    rows = []
    for dataset, methods in groups.items():
        cost = {
            m: (np.mean([r["train_s"] for r in runs]), np.mean([r["infer_s"] for r in runs]))
            for m, runs in methods.items()
        }
        for method, runs in methods.items():
            test = lambda key: [r["test"][key] for r in runs if key in r["test"]]  # noqa: E731
            shifted = [
                np.mean([level["nll"] for sets in r["shift"].values() for level in sets])
                for r in runs
                if r["shift"]
            ]
            train, infer = cost[method]
            plain_train, plain_infer = cost.get("plain", (float("nan"), float("nan")))
            rows.append(
                [
                    dataset,
                    LABELS[method],
                    *(mean_std(test(key)) for key in ("accuracy", "nll", "ece", "brier")),
                    mean_std(test("disagreement")),
                    mean_std([r["ood"]["held_out"]["entropy"]["ood_auroc"] for r in runs]),
                    mean_std(shifted) if shifted else "-",
                    f"{train / plain_train:.1f} x",
                    f"{infer / plain_infer:.1f} x",
                ]
            )
    return markdown_table(header, rows)


def mean_nll(runs):
    return float(np.mean([r["test"]["nll"] for r in runs]))


def yardsticks(methods):
    """NLL and OOD AUROC against plain and the ensemble (means; the runs are
    not matched to the ensemble's cost, so no share of a gap is taken)."""
    if not {"plain", "ensemble"} <= set(methods):
        return []
    nll = {m: mean_nll(runs) for m, runs in methods.items()}
    lines = []
    for method in ("agrlearn_default", "agrlearn_best"):
        if method not in methods:
            continue
        text = (
            f"- {LABELS[method]}: NLL {nll[method]:.3f} (plain {nll['plain']:.3f}, "
            f"ensemble {nll['ensemble']:.3f})"
        )
        for name in sorted(methods[method][0]["ood"]):
            ours = np.mean([r["ood"][name]["entropy"]["ood_auroc"] for r in methods[method]])
            plain = np.mean([r["ood"][name]["entropy"]["ood_auroc"] for r in methods["plain"]])
            text += f"; OOD AUROC ({name}, entropy) {ours:.3f} against plain {plain:.3f}"
        lines.append(text + ".")
    return lines


def environment(records):
    """The Keras versions and backends the records name (records before their stamp name none)."""
    kerases = sorted({r["keras"] for r in records if "keras" in r})
    backends = sorted({r["backend"] for r in records if "backend" in r})
    if not kerases and not backends:
        return "backend and Keras version not recorded"
    return f"Keras {', '.join(kerases) or '?'}, backend {', '.join(backends) or '?'}"


def write(records, out, command="python experiments/uncertainty.py"):
    """Writes `out/RESULTS_UNCERTAINTY.md` and its two plots from the records."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = grouped(records)
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "## Uncertainty: plain, AgrLearn and a deep ensemble",
        "",
        f"Written by `{command}` from {len(records)} runs ({len(seeds)} seed(s); "
        f"{environment(records)}). Mean ± std over seeds. "
        "Training on 8 of 10 classes; OOD = the 2 held-out classes (`held_out`) and, for "
        "Fashion-MNIST, scikit-learn digits upscaled to 28x28 (`digits`); OOD columns use "
        "the entropy score. Times are seconds for the whole training (all members) and "
        "for one pass over the test set. See `experiments/uncertainty.py` for the protocol.",
        "",
        "The AgrLearn runs here cost 2-5 x the plain model's training FLOPs and are not matched "
        "to the ensemble's cost; the cost-matched comparison is in [RESULTS.md]"
        "(RESULTS.md#uncertainty-against-a-deep-ensemble-cost-stated), which supersedes this "
        "report's conclusions.",
        "",
    ]
    lines += ["### Summary", ""] + summary_table(groups) + [""]
    for dataset, methods in groups.items():
        lines += [f"### {dataset}", ""] + main_table(methods) + [""]
        lines += yardsticks(methods) + [""]
        lines += ["OOD AUROC by score:", ""] + ood_score_table(methods) + [""]
        table = shift_table(methods)
        if table:
            lines += ["Accuracy / NLL under shift (severity 0 is the clean test set):", ""]
            lines += table + [""]
    lines += [
        "![reliability diagram](uncertainty_reliability.png)",
        "",
        "![accuracy and NLL under shift](uncertainty_shift.png)",
        "",
    ]
    write_page(out / "RESULTS_UNCERTAINTY.md", lines)
    plot_reliability(groups, out / "uncertainty_reliability.png")
    plot_shift(groups, out / "uncertainty_shift.png")


def plot_reliability(groups, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), squeeze=False)
    for ax, (dataset, methods) in zip(axes[0], groups.items()):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        for method, runs in methods.items():
            count = np.sum([r["reliability"]["count"] for r in runs], axis=0)
            confidence = np.sum([r["reliability"]["confidence"] for r in runs], axis=0)
            correct = np.sum([r["reliability"]["correct"] for r in runs], axis=0)
            # A bin of a few samples (all seeds together) is noise, not calibration.
            used = count >= MIN_BIN_SAMPLES
            ax.plot(
                confidence[used] / count[used],
                correct[used] / count[used],
                marker="o",
                markersize=3,
                label=LABELS[method],
            )
        ax.set_title(f"{dataset} (bins of >= {MIN_BIN_SAMPLES} samples)", fontsize=10)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shift(groups, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (d, name)
        for d, methods in groups.items()
        for name in next(iter(methods.values()))[0]["shift"]
    ]
    columns = max(1, len(panels))
    fig, axes = plt.subplots(2, columns, figsize=(3.4 * columns, 6), squeeze=False)
    for column, (dataset, name) in enumerate(panels):
        for method, runs in groups[dataset].items():
            for row, metric in enumerate(("accuracy", "nll")):
                values = shift_curves(runs, name, metric)
                axes[row][column].plot(
                    range(len(values)), values, marker="o", markersize=3, label=LABELS[method]
                )
        axes[0][column].set_title(f"{dataset}: {name}", fontsize=9)
        axes[1][column].set_xlabel("severity")
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("NLL")
    if panels:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
