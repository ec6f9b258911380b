"""The compute-fair study's report: docs/FAIR.md and its plots, from the records.

    python experiments/fair.py --report-only

applies docs/PROTOCOL.md's decision rule to `docs/results/fair.jsonl`: for
every AgrLearn arm, the best plain arm that costs no more training and no more
inference FLOPs (within 10 %), chosen on validation accuracy, and the 95 %
interval of the paired (same seed) difference against it.
"""

import math
from pathlib import Path

import numpy as np

from experiments import fair_configs
from experiments import stats
from experiments.tables import fmt_diff
from experiments.tables import markdown_table
from experiments.tables import write_page

# Costs within this factor count as "no more".
COST_SLACK = 1.1
SPLIT = {"selection": "val", "confirmation": "test"}


def paired(a, b, split, metric):
    """Mean and 95 % half-width of a - b over the seeds both have, and their count."""
    a_by_seed, b_by_seed = dict(a["by_seed"]), dict(b["by_seed"])
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    diffs = [a_by_seed[s][split][metric] - b_by_seed[s][split][metric] for s in seeds]
    return (*stats.paired_t(diffs), len(diffs))


def verdict(mean, half):
    """'win', 'loss', 'tie' or 'n/a' of the interval mean +- half."""
    return stats.verdict(mean - half, mean + half)


def rows_of(records, config, phase="arms", fraction=1.0):
    """One row per (arm, inference) of a configuration: seeds, costs and scores."""
    rows = {}
    for r in records:
        if r["config"] != config or r["phase"] != phase or r["fraction"] != fraction:
            continue
        for inference, ev in r["evaluations"].items():
            name = r["arm"] if len(r["evaluations"]) == 1 else f"{r['arm']} ({inference})"
            row = rows.setdefault(
                name,
                dict(
                    arm=r["arm"],
                    inference=inference,
                    by_seed=[],
                    train_x=[],
                    infer_x=[],
                    train_s=[],
                    predict_s=[],
                    epochs=r["epochs"],
                    passes=r["passes_per_epoch"],
                    params=r["params"],
                ),
            )
            row["by_seed"].append((r["seed"], ev))
            row["train_x"].append(r["train_flops_x"])
            row["infer_x"].append(ev["infer_flops_x"])
            row["train_s"].append(r["train_s"])
            row["predict_s"].append(ev["predict_s_per_1000"])
    for row in rows.values():
        row["by_seed"].sort(key=lambda item: item[0])
        for key in ("train_x", "infer_x", "train_s", "predict_s"):
            row[key] = float(np.median(row[key]))
    order = {arm: i for i, arm in enumerate(fair_configs.ARMS)}
    return dict(
        sorted(rows.items(), key=lambda item: (order.get(item[1]["arm"], len(order)), item[0]))
    )


def mean_of(row, split, metric):
    return float(np.mean([ev[split][metric] for _, ev in row["by_seed"]]))


def best_matched(rows, agr):
    """The plain row costing at most COST_SLACK x `agr` in both FLOPs, best on validation."""
    candidates = [
        (name, row)
        for name, row in rows.items()
        if not row["arm"].startswith("wrap-")
        and row["train_x"] <= COST_SLACK * agr["train_x"]
        and row["infer_x"] <= COST_SLACK * agr["infer_x"]
    ]
    if not candidates:
        return None, None
    return max(candidates, key=lambda item: mean_of(item[1], "val", "acc"))


def arms_table(rows, split):
    header = [
        "arm",
        "epochs",
        "train FLOPs",
        "inference FLOPs / sample",
        "passes / epoch",
        "train s",
        "val acc %",
        "test acc %",
        "test NLL",
        "test ECE %",
        "seeds",
        f"Δ acc vs plain ({split})",
        "best compute-matched plain arm",
        f"Δ acc vs it ({split})",
        f"Δ NLL vs it ({split})",
        "verdict",
    ]
    table = []
    plain = rows.get("plain")
    for name, row in rows.items():
        k = len(row["by_seed"])
        cells = [
            f"`{name}`",
            str(row["epochs"]),
            f"{row['train_x']:.2f} x",
            f"{row['infer_x']:.2f} x",
            str(row["passes"]),
            f"{row['train_s']:.0f}",
            f"{100 * mean_of(row, 'val', 'acc'):.2f}",
            f"{100 * mean_of(row, 'test', 'acc'):.2f}",
            f"{mean_of(row, 'test', 'nll'):.3f}",
            f"{100 * mean_of(row, 'test', 'ece'):.2f}",
            str(k),
        ]
        cells.append(
            ""
            if name == "plain" or plain is None
            else fmt_diff(*paired(row, plain, split, "acc")[:2])
        )
        if row["arm"].startswith("wrap-"):
            matched_name, matched = best_matched(rows, row)
            if matched is None:
                cells += ["none costs as little", "", "", ""]
            else:
                acc = paired(row, matched, split, "acc")
                nll = paired(row, matched, split, "nll")
                cells += [
                    f"`{matched_name}`",
                    fmt_diff(*acc[:2]),
                    fmt_diff(*nll[:2], scale=1.0, digits=3),
                    verdict(*acc[:2]),
                ]
        else:
            cells += ["", "", "", ""]
        table.append(cells)
    return markdown_table(header, table)


def decisions(records, configs):
    """Verdicts of each AgrLearn row against its matched plain arm, per configuration."""
    table = {}
    for config, role in configs:
        rows = rows_of(records, config)
        for name, row in rows.items():
            if not row["arm"].startswith("wrap-"):
                continue
            _, matched = best_matched(rows, row)
            if matched is None:
                continue
            mean, half, _ = paired(row, matched, SPLIT[role], "acc")
            table.setdefault(name, {})[config] = verdict(mean, half)
    return table


def chosen_default(table, configs):
    """The protocol's rule: most selection wins, no confirmation loss."""
    selection = [c for c, role in configs if role == "selection"]
    confirmation = [c for c, role in configs if role == "confirmation"]
    best, best_wins = None, 0
    for name, verdicts in table.items():
        wins = sum(verdicts.get(c) == "win" for c in selection)
        if any(verdicts.get(c) == "loss" for c in confirmation):
            continue
        if wins > best_wins:
            best, best_wins = name, wins
    return best, best_wins


def decision_text(table, configs, best, wins):
    """The rule's outcome in a sentence, naming the arms it turned down and why."""
    if best:
        return (
            f"By the rule, the defaults become `{best}` ({wins} selection wins, no "
            "confirmation loss)."
        )
    selection = [c for c, role in configs if role == "selection"]
    confirmation = [c for c, role in configs if role == "confirmation"]
    refused = []
    for name, verdicts in table.items():
        won = [c for c in selection if verdicts.get(c) == "win"]
        lost = [c for c in confirmation if verdicts.get(c) == "loss"]
        if won and lost:
            refused.append(
                f"`{name}` wins on {', '.join(f'`{c}`' for c in won)} but loses on the "
                f"confirmation data ({', '.join(f'`{c}`' for c in lost)})"
            )
    if not refused:
        return (
            "By the rule, **no AgrLearn arm wins** on any selection configuration against the "
            "plain arms of equal or lower cost; see the README for what the defaults became."
        )
    return (
        "By the rule, **no AgrLearn arm qualifies as the defaults**: "
        + "; ".join(refused)
        + ". See the README for what the defaults became."
    )


def budget_section(records, config, budgets, chosen):
    runs = [r for r in records if r["config"] == config and r["phase"] == "budget"]
    if not runs:
        return []
    cells = []
    for budget in budgets:
        values = [
            r["evaluations"]["replicate"]["val"]["acc"] for r in runs if r["budget"] == budget
        ]
        nll = [r["evaluations"]["replicate"]["val"]["nll"] for r in runs if r["budget"] == budget]
        if values:
            mark = " (E)" if budget == chosen else ""
            cells.append(f"{budget}{mark}: {100 * np.mean(values):.2f} % / {np.mean(nll):.3f}")
    line = f"- `{config}`: " + "; ".join(cells)
    if chosen is not None and chosen == max(budgets) and len(budgets) > 1:
        rows = rows_of(records, config)
        longer = ""
        if "plain" in rows and "plain-long2" in rows:
            mean, half, _ = paired(rows["plain-long2"], rows["plain"], "val", "acc")
            longer = (
                f": 2E (`plain-long2`) adds {fmt_diff(mean, half)} points of validation accuracy"
            )
        line += f" (E is the grid's largest budget{longer})"
    return [line]


def data_points(config, options):
    """(configuration, phase, fraction, share of the full training set) of each curve point."""
    spec = fair_configs.CONFIGS[config]
    share = fair_configs.train_size(config, options) / fair_configs.full_size(config, options)
    fractions = spec.get("data_fractions", fair_configs.DATA_FRACTIONS)
    points = [(config, "data", f, round(f * share, 4)) for f in fractions]
    points.append((config, "arms", 1.0, round(share, 4)))
    if share < 1 and "data_full" in spec:
        points.append((spec["data_full"], "arms", 1.0, 1.0))
    return points


def data_section(records, config, options):
    points = data_points(config, options)
    samples = fair_configs.full_size(config, options)
    arms = sorted({r["arm"] for r in records if r["config"] == config and r["phase"] == "data"})
    if not arms:
        return [], {}
    shares = [share for *_, share in points]
    rows_at = {share: rows_of(records, c, phase, f) for c, phase, f, share in points}
    curves = {}
    for arm in arms:
        for share in shares:
            row = rows_at[share].get(arm)
            if row:
                curves.setdefault(arm, {})[share] = (
                    mean_of(row, "test", "acc"),
                    len(row["by_seed"]),
                )
    target = curves.get("plain", {}).get(1.0, (math.nan,))[0]
    header = ["arm", *(f"{100 * s:g} %" for s in shares)]
    accuracies = []
    for arm, curve in curves.items():
        cells = [f"{100 * curve[s][0]:.2f} ({curve[s][1]})" if s in curve else "-" for s in shares]
        needed = share_needed(curve, target) if 1.0 in curve or arm == "plain" else "-"
        accuracies.append([f"`{arm}`", *cells, needed])
    differences = []
    for arm in curves:
        if arm == "plain":
            continue
        cells = []
        for share in shares:
            rows = rows_at[share]
            if arm in rows and "plain" in rows:
                cells.append(fmt_diff(*paired(rows[arm], rows["plain"], "test", "acc")[:2]))
            else:
                cells.append("-")
        differences.append([f"`{arm}`", *cells])
    lines = [
        f"Test accuracy % (seeds) at each share of the {samples:,} training samples; the last "
        f"column is the share each arm needs to reach plain's full-data test accuracy "
        f"({100 * target:.2f} %), "
        'interpolated linearly ("> 100 %" where it never does; "-" where a point is missing).',
        "",
        *markdown_table([*header, "share needed"], accuracies),
        "",
        "Paired difference against `plain` at the same share (test accuracy, points, 95 % "
        "interval):",
        "",
        *markdown_table(header, differences),
    ]
    return lines, curves


def share_needed(curve, target):
    points = sorted((f, acc) for f, (acc, _) in curve.items())
    if math.isnan(target):
        return "-"
    previous = None
    for fraction, acc in points:
        if acc >= target:
            if previous is None:
                return f"<= {100 * fraction:.0f} %"
            f0, a0 = previous
            share = f0 + (target - a0) / (acc - a0) * (fraction - f0)
            return f"{100 * share:.0f} %"
        previous = (fraction, acc)
    return "> 100 %"


def uncertainty_section(records, configs):
    header = [
        "configuration",
        "AgrLearn arm",
        "train / inference FLOPs vs the ensemble",
        "Δ NLL",
        "Δ ECE %",
        "Δ Brier",
        "Δ acc %",
    ]
    table = []
    for config, _ in configs:
        rows = rows_of(records, config)
        ensemble = rows.get("ensemble")
        if ensemble is None:
            continue
        for name in ("wrap-paper (replicate)", "wrap-defaults", "wrap-mimo", "wrap-n2"):
            row = rows.get(name)
            if row is None:
                continue
            cells = [
                config,
                f"`{name}`",
                f"{row['train_x'] / ensemble['train_x']:.2f} x / "
                f"{row['infer_x'] / ensemble['infer_x']:.2f} x",
                fmt_diff(*paired(row, ensemble, "test", "nll")[:2], scale=1.0, digits=3),
                fmt_diff(*paired(row, ensemble, "test", "ece")[:2]),
                fmt_diff(*paired(row, ensemble, "test", "brier")[:2], scale=1.0, digits=4),
                fmt_diff(*paired(row, ensemble, "test", "acc")[:2]),
            ]
            table.append(cells)
    return markdown_table(header, table) if table else []


def plot(records, configs, budgets_of, data_curves, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for config, _ in configs:
        runs = [r for r in records if r["config"] == config and r["phase"] == "budget"]
        points = []
        for budget in budgets_of(config):
            values = [
                r["evaluations"]["replicate"]["val"]["acc"] for r in runs if r["budget"] == budget
            ]
            if values:
                points.append((budget, 100 * np.mean(values)))
        if points:
            axes[0].plot(*zip(*points), marker="o", label=config)
        longest = max((r for r in runs if r.get("curve")), key=lambda r: r["epochs"], default=None)
        if longest:
            curve = longest["curve"]["val_loss"]
            axes[1].plot(
                range(1, len(curve) + 1), curve, label=f"{config} ({longest['epochs']} epochs)"
            )
    axes[0].set(
        xscale="log",
        xlabel="plain model's budget (epochs, cosine schedule)",
        ylabel="validation accuracy %",
        title="Where the plain model converges",
    )
    axes[1].set(
        xlabel="epoch",
        ylabel="validation loss",
        yscale="log",
        title="Validation curve of the longest budget",
    )
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "fair_budgets.png", dpi=90)
    plt.close(fig)
    if data_curves:
        fig, axes = plt.subplots(
            1, len(data_curves), figsize=(5.5 * len(data_curves), 4), squeeze=False
        )
        for ax, (config, curves) in zip(axes[0], data_curves.items()):
            for arm, curve in curves.items():
                points = sorted((100 * f, 100 * acc) for f, (acc, _) in curve.items())
                # One colour per arm across the panels.
                arms = fair_configs.DATA_ARMS
                colour = f"C{arms.index(arm)}" if arm in arms else None
                ax.plot(*zip(*points), marker="o", label=arm, color=colour)
            ax.set(
                xscale="log",
                xlabel="% of the training data",
                ylabel="test accuracy %",
                title=config,
            )
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "fair_data_efficiency.png", dpi=90)
        plt.close(fig)


def write(records, options, argv):
    """Writes `options.report` and its plots (beside it) from the records by key."""

    records = list(records.values())
    out = Path(options.report)
    configs = [
        (c, fair_configs.CONFIGS[c]["role"])
        for c in fair_configs.CONFIGS
        if any(r["config"] == c for r in records)
    ]
    meta = {}
    for r in records:
        meta.setdefault((r["backend"], r["keras"], r["device"]), set()).add(r["config"])
    dates = sorted({r["date"] for r in records})
    lines = [
        "# Compute-fair study: `wrap` against the same compute spent on the plain model",
        "",
        "Generated by `python experiments/fair.py --report-only` from "
        f"`{Path(options.records).name}`; protocol and decision rule: [PROTOCOL.md](PROTOCOL.md) "
        "(written before the runs). Runs: "
        + "; ".join(
            f"{b}, Keras {k}, {d} ({', '.join(f'`{c}`' for c in sorted(cs))})"
            for (b, k, d), cs in sorted(meta.items())
        )
        + (f"; {dates[0]} to {dates[-1]}." if dates else "."),
        "",
        "Costs are relative to `plain` at E epochs: training FLOPs of the whole run, inference "
        "FLOPs per predicted sample, both counted from the layers (`experiments/flops.py`). Wall "
        "times are medians on a shared machine (indicative). Intervals: 95 % for the paired "
        "(same seed) difference; a **win** is an accuracy interval above zero against the best "
        "plain arm that costs no more training and no more inference FLOPs (10 % slack), chosen "
        "on validation accuracy. Selection configurations are judged on validation data, "
        "confirmation ones on the test split.",
        "",
        "## Budgets: where the plain model converges",
        "",
        "Validation accuracy / NLL of the plain model trained to each budget (2 seeds); E marked.",
        "",
    ]
    for config, _ in configs:
        if "budgets" not in fair_configs.CONFIGS[config]:
            continue
        chosen = fair_configs.choose_budget({i: r for i, r in enumerate(records)}, config)
        lines += budget_section(records, config, fair_configs.CONFIGS[config]["budgets"], chosen)
    lines += ["", "![budgets](fair_budgets.png)", ""]
    table = decisions(records, configs)
    for config, role in configs:
        rows = rows_of(records, config)
        if not rows:
            continue
        lines += [
            f"## `{config}` ({role}; differences on the {SPLIT[role]} split)",
            "",
            *arms_table(rows, SPLIT[role]),
            "",
        ]
    if table:
        names = [c for c, _ in configs]
        lines += [
            "## Decision",
            "",
            "Verdict of each AgrLearn arm against its best compute-matched plain arm.",
            "",
            *markdown_table(
                ["AgrLearn arm", *(f"`{c}`" for c in names)],
                [
                    [f"`{n}`", *(verdicts.get(c, "-") for c in names)]
                    for n, verdicts in table.items()
                ],
            ),
        ]
        best, wins = chosen_default(table, configs)
        lines += ["", decision_text(table, configs, best, wins), ""]
    data_curves = {}
    for config, _ in configs:
        section, curves = data_section(records, config, options)
        if section:
            data_curves[config] = curves
            lines += [f"## Data efficiency: `{config}`", "", *section, ""]
    if data_curves:
        lines += ["![data efficiency](fair_data_efficiency.png)", ""]
    unc = uncertainty_section(records, configs)
    if unc:
        lines += [
            "## Uncertainty against the deep ensemble, cost stated",
            "",
            "AgrLearn minus the ensemble of 3 plain models on the test split "
            "(negative NLL, ECE and Brier differences favour AgrLearn).",
            "",
            *unc,
            "",
        ]
    write_page(out, lines)
    plot(
        records,
        configs,
        lambda c: fair_configs.CONFIGS[c].get("budgets", ()),
        data_curves,
        out.parent,
    )
