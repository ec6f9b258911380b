"""The regime study's report: docs/REGIME.md from its records and stored predictions.

    python experiments/regime.py --report-only

applies docs/PROTOCOL_REGIME.md's rule: in each cell (configuration x
training-FLOP cap), the best AgrLearn configuration and the best plain one,
chosen on validation, compared on confirmation data with 5 fresh seeds; a
two-level paired bootstrap over seeds and test examples, Holm's correction
over all cells. The page depends on the records and predictions alone, so it
regenerates byte for byte.

This module imports no study module: what it needs of the protocol comes in
the `protocol` dict (`regime.protocol()`).
"""

import math
from pathlib import Path

import numpy as np

from experiments import stats
from experiments import study
from experiments import tables

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python experiments/regime.py --report-only"


def _pct(value):
    return f"{100 * value:.2f}"


def _short(run):
    """`wrap-aug`, lr 0.01, wd 0.05, 1.5 x (240 ep)."""
    return (
        f"`{run['method']}` lr {run['lr']:g}, wd {run['wd']:g}, "
        f"{run['train_flops_x']:.2f} x train ({run['epochs']} ep), "
        f"{run['infer_flops_x']:.2f} x inference"
    )


def confirm_runs(records, config, pick):
    """Stage-2 records of a picked configuration, by seed."""
    what = (pick["method"], pick["lr"], pick["wd"], pick["budget"])
    return {
        r["seed"]: r
        for r in records.values()
        if r["config"] == config
        and r["stage"] == "confirm"
        and (r["method"], r["lr"], r["wd"], r["budget"]) == what
    }


def per_example(records_path, runs, seeds, tempered):
    """(seeds, examples) arrays of correctness and NLL of the runs' test predictions."""
    correct, nll = [], []
    for seed in seeds:
        run = runs[seed]
        stored = study.load_predictions(records_path, run["key"])
        probs, labels = stored["test"], stored["test_labels"]
        if tempered:
            probs = stats.tempered(probs, run["temperature"])
        correct.append((probs.argmax(axis=1) == labels).astype("float64"))
        nll.append(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-30, None)))
    return np.array(correct), np.array(nll)


def _configs(options, protocol):
    """Every configuration of the protocol (the Holm family is all its cells), or, in a
    smoke test, those asked for."""
    return options.configs if options.quick else list(protocol["configs"])


def cells(records, options, protocol):
    """Every cell's picks and, where stage 2 is complete, its comparisons."""
    out = []
    for config in _configs(options, protocol):
        for cap in protocol["caps"]:
            chosen = protocol["choices"](records, config, cap, options)
            cell = dict(config=config, cap=cap, chosen=chosen, comparison=None)
            if chosen and "agrlearn" in chosen and "plain" in chosen:
                agr = confirm_runs(records, config, chosen["agrlearn"])
                plain = confirm_runs(records, config, chosen["plain"])
                seeds = sorted(set(agr) & set(plain) & set(options.confirmation_seeds))
                cell["agr_runs"], cell["plain_runs"] = agr, plain
                if chosen.get("ensemble"):
                    cell["ensemble_runs"] = confirm_runs(records, config, chosen["ensemble"])
                if len(seeds) == len(options.confirmation_seeds):
                    a_ok, a_nll = per_example(options.records, agr, seeds, tempered=True)
                    b_ok, b_nll = per_example(options.records, plain, seeds, tempered=True)
                    cell["comparison"] = dict(a_ok=a_ok, b_ok=b_ok, a_nll=a_nll, b_nll=b_nll)
                    ensemble = cell.get("ensemble_runs", {})
                    if set(seeds) <= set(ensemble):
                        e_ok, e_nll = per_example(options.records, ensemble, seeds, tempered=True)
                        cell["reference"] = dict(e_ok=e_ok, e_nll=e_nll)
            out.append(cell)
    return out


def decide(cells_, resamples):
    """Bootstrap p-values, Holm's levels over all cells, intervals at those levels, verdicts."""
    pvalues = []
    for cell in cells_:
        comparison = cell["comparison"]
        if comparison is None:
            pvalues.append(1.0)
            continue
        first = stats.paired_bootstrap(comparison["a_ok"], comparison["b_ok"], resamples=resamples)
        pvalues.append(first["p"])
    levels, rejected = stats.holm(pvalues)
    for cell, level, reject in zip(cells_, levels, rejected):
        comparison = cell["comparison"]
        cell["level"] = level
        if comparison is None:
            cell["verdict"] = "pending"
            continue
        acc = stats.paired_bootstrap(
            comparison["a_ok"], comparison["b_ok"], alpha=level, resamples=resamples
        )
        nll = stats.paired_bootstrap(
            comparison["a_nll"], comparison["b_nll"], alpha=level, resamples=resamples
        )
        cell["acc"], cell["nll"] = acc, nll
        if reject and acc["mean"] > 0:
            cell["verdict"] = "win"
        elif reject and acc["mean"] < 0:
            cell["verdict"] = "loss"
        else:
            cell["verdict"] = "tie"
    return cells_


def _mean(runs, split, metric):
    values = [r[split][metric] for r in runs.values()]
    return float(np.mean(values)) if values else math.nan


def decision_table(cells_):
    rows = []
    for cell in cells_:
        chosen = cell["chosen"] or {}
        name = f"`{cell['config']}` at {cell['cap']:g} x"
        agr = _short(chosen["agrlearn"]) if "agrlearn" in chosen else "stage 1 running"
        plain = _short(chosen["plain"]) if "plain" in chosen else "stage 1 running"
        if cell["comparison"] is None:
            done = len(cell.get("agr_runs", {})), len(cell.get("plain_runs", {}))
            rows.append(
                [name, agr, plain, "-", "-", "-", f"pending (stage 2: {done[0]}, {done[1]} seeds)"]
            )
            continue
        agr_acc = _pct(_mean(cell["agr_runs"], "test", "acc"))
        plain_acc = _pct(_mean(cell["plain_runs"], "test", "acc"))
        rows.append(
            [
                name,
                f"{agr}: **{agr_acc} %**",
                f"{plain}: **{plain_acc} %**",
                tables.fmt_interval(cell["acc"]["mean"], cell["acc"]["low"], cell["acc"]["high"]),
                tables.fmt_interval(
                    cell["nll"]["mean"], cell["nll"]["low"], cell["nll"]["high"], 1.0, 3
                ),
                f"{cell['level']:.4f}",
                f"**{cell['verdict']}**",
            ]
        )
    return tables.markdown_table(
        [
            "cell",
            "best AgrLearn (chosen on validation): test acc",
            "best plain at no more cost: test acc",
            "Δ acc, points [interval at Holm level]",
            "Δ tempered NLL [interval]",
            "Holm level",
            "verdict",
        ],
        rows,
    )


def reference_table(cells_, resamples):
    """The confirmed cells' AgrLearn and plain choices against the ensemble, tempered."""
    rows = []
    for cell in cells_:
        reference, comparison = cell.get("reference"), cell["comparison"]
        if reference is None or comparison is None:
            continue
        ensemble = next(iter(cell["ensemble_runs"].values()))
        row = [
            f"`{cell['config']}` at {cell['cap']:g} x",
            f"`{ensemble['method']}` lr {ensemble['lr']:g}, wd {ensemble['wd']:g}: "
            f"{ensemble['train_flops_x']:.2f} x / {ensemble['infer_flops_x']:.2f} x",
        ]
        for ok, nll in (("a_ok", "a_nll"), ("b_ok", "b_nll")):
            acc = stats.paired_bootstrap(comparison[ok], reference["e_ok"], resamples=resamples)
            tempered = stats.paired_bootstrap(
                comparison[nll], reference["e_nll"], resamples=resamples
            )
            row += [
                tables.fmt_interval(acc["mean"], acc["low"], acc["high"]),
                tables.fmt_interval(tempered["mean"], tempered["low"], tempered["high"], 1.0, 3),
            ]
        rows.append(row)
    if not rows:
        return ["No cell has the ensemble's 5 confirmation seeds yet."]
    return tables.markdown_table(
        [
            "cell",
            "ensemble (training / inference FLOPs)",
            "AgrLearn - ensemble: Δ acc, points",
            "Δ tempered NLL",
            "plain - ensemble: Δ acc, points",
            "Δ tempered NLL",
        ],
        rows,
    )


def calibration_table(cells_):
    rows = []
    for cell in cells_:
        for family, key in (
            ("AgrLearn", "agr_runs"),
            ("plain", "plain_runs"),
            ("ensemble", "ensemble_runs"),
        ):
            runs = cell.get(key) or {}
            if not runs:
                continue
            run = next(iter(runs.values()))
            rows.append(
                [
                    f"`{cell['config']}` at {cell['cap']:g} x",
                    f"{family}: `{run['method']}`",
                    f"{run['train_flops_x']:.2f} x / {run['infer_flops_x']:.2f} x",
                    len(runs),
                    _pct(_mean(runs, "test", "acc")),
                    f"{_mean(runs, 'test', 'nll'):.3f}",
                    f"{_mean(runs, 'test_tempered', 'nll'):.3f}",
                    f"{100 * _mean(runs, 'test', 'ece'):.2f}",
                    f"{100 * _mean(runs, 'test_tempered', 'ece'):.2f}",
                    f"{_mean(runs, 'test_tempered', 'brier'):.4f}",
                    f"{float(np.mean([r['temperature'] for r in runs.values()])):.2f}",
                ]
            )
    return tables.markdown_table(
        [
            "cell",
            "arm",
            "train / inference FLOPs",
            "seeds",
            "test acc %",
            "NLL raw",
            "NLL tempered",
            "ECE % raw",
            "ECE % tempered",
            "Brier tempered",
            "T",
        ],
        rows,
    )


def stage1_section(records, config, options, protocol):
    spec = protocol["configs"][config]
    runs = [
        r for r in records.values() if r["config"] == config and r["stage"] in ("lrwd", "length")
    ]
    lines = [f"### `{config}`", ""]
    budget = [r for r in records.values() if r["config"] == config and r["stage"] == "budget"]
    if spec["E"] is not None:
        lines.append(f"E = {spec['E']} epochs (docs/FAIR.md, `{spec['source']}`).")
    elif budget:
        means = {}
        for r in budget:
            means.setdefault(r["budget"], []).append(r["val"]["acc"])
        grid = "; ".join(
            f"{b}: {_pct(float(np.mean(v)))} % ({len(v)} seeds)" for b, v in sorted(means.items())
        )
        E = runs[0]["E"] if runs else "not chosen yet"
        lines.append(f"Budget runs of the plain model (validation accuracy): {grid}. E = {E}.")
    lines.append("")
    if not runs:
        return lines + ["No stage-1 run yet.", ""]
    lrwd = {}
    for r in runs:
        if r["stage"] == "lrwd":
            lrwd.setdefault(r["method"], {})[(r["lr"], r["wd"])] = r
    pairs = sorted({pair for by in lrwd.values() for pair in by})
    lines += [
        "Stage 1a, validation accuracy % at share 1 (learning rate / weight decay):",
        "",
    ]
    lines += tables.markdown_table(
        ["method"] + [f"{lr:g} / {wd:g}" for lr, wd in pairs],
        [
            [f"`{m}`"] + [(_pct(by[p]["val"]["acc"]) if p in by else "-") for p in pairs]
            for m, by in lrwd.items()
        ],
    )
    edges = []
    lrs = sorted({lr for lr, _ in pairs})
    for method, by in lrwd.items():
        if len(by) == len(pairs) and len(lrs) > 2:
            best = max(by.values(), key=lambda r: r["val"]["acc"])
            if best["lr"] in (lrs[0], lrs[-1]):
                edges.append(f"`{method}` ({best['lr']:g})")
    if edges:
        lines += [
            "",
            "Best learning rate at the edge of the grid (the optimum may lie beyond it): "
            + ", ".join(edges)
            + ".",
        ]
    shares = protocol["shares"]
    lines += [
        "",
        "Stage 1b, the best pair's validation accuracy % at each share of E's training FLOPs:",
        "",
    ]
    rows = []
    for method in lrwd:
        mine = [r for r in runs if r["method"] == method]
        pair = next(((r["lr"], r["wd"]) for r in mine if r["stage"] == "length"), None)
        cells_ = []
        for share in shares:
            hit = [
                r
                for r in mine
                if r["budget"] == share and (pair is None or (r["lr"], r["wd"]) == pair)
            ]
            if share == 1.0 and pair is None:
                hit = []
            cells_.append(f"{_pct(hit[0]['val']['acc'])} ({hit[0]['epochs']} ep)" if hit else "-")
        label = f"{pair[0]:g} / {pair[1]:g}" if pair else "-"
        rows.append([f"`{method}`", label] + cells_)
    lines += tables.markdown_table(["method", "lr / wd"] + [f"{s:g} x" for s in shares], rows)
    return lines + [""]


def write(records, options, protocol):
    """Writes docs/REGIME.md (or `options.report`) from the records."""
    cells_ = decide(cells(records, options, protocol), protocol["resamples"])
    backends = sorted({(r["backend"], r["keras"], r["device"]) for r in records.values()})
    hours = sum(r["train_s"] for r in records.values()) / 3600
    stages = {}
    for r in records.values():
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    lines = [
        "# Regime study: every method at its own best, under one FLOP cap",
        "",
        "Protocol: [PROTOCOL_REGIME.md](PROTOCOL_REGIME.md), committed before the first run. "
        f"Generated by `{COMMAND}` from `docs/results/regime.jsonl` and the per-example "
        "predictions beside it; do not edit by hand.",
        "",
        "Runs: "
        + ", ".join(
            f"{stages[s]} {s}" for s in ("budget", "lrwd", "length", "confirm") if s in stages
        )
        + f"; {hours:.2f} worker-hours of training (2-core CPU machine, runs two at a time).",
        "Backends: " + "; ".join(f"{b} (Keras {k}, {d})" for b, k, d in backends) + ".",
        "",
        "## Decision",
        "",
        "Per cell, the best AgrLearn configuration against the best plain configuration at no "
        "more training FLOPs and at most 1.1 x its inference FLOPs, both chosen on validation "
        "and confirmed on data never evaluated before with 5 fresh seeds. Δ is AgrLearn minus "
        "plain; intervals are two-level bootstrap intervals (seeds and test examples) at each "
        f"cell's Holm level (family of {len(cells_)} cells, 5 %). Costs are relative to the "
        "plain model at E.",
        "",
    ]
    lines += decision_table(cells_)
    lines += [
        "",
        "## Calibration after temperature scaling (confirmation data)",
        "",
        "Every arm's temperature is fitted per run on its validation predictions.",
        "",
    ]
    lines += calibration_table(cells_)
    lines += [
        "",
        "## Against the ensemble (reference)",
        "",
        "The ensemble of 2 plain models is exempt from the inference cap and takes part in no "
        "decision. Each cell's chosen AgrLearn and plain configurations against its chosen "
        "ensemble on the same seeds and test examples: the same two-level bootstrap, at 95 % "
        "without a multiplicity correction; positive Δ acc and negative Δ NLL favour the "
        "first. NLL after temperature scaling.",
        "",
    ]
    lines += reference_table(cells_, protocol["resamples"])
    lines += ["", "## Stage 1: the search, on validation (seed 0)", ""]
    figure = Path(options.report).with_name("regime_budgets.png")
    if plot(records, _configs(options, protocol), protocol, figure):
        lines += [f"![stage 1b]({figure.name})", ""]
    for config in _configs(options, protocol):
        lines += stage1_section(records, config, options, protocol)
    tables.write_page(options.report, lines)


def plot(records, configs, protocol, path):
    """Validation accuracy against training FLOPs (share of plain at E), per method and
    configuration, for each method's best pair; False where there is nothing to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        c
        for c in configs
        if any(r["config"] == c and r["stage"] == "length" for r in records.values())
    ]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(protocol["methods"])}
    for ax, config in zip(axes[0], shown):
        for method in protocol["methods"]:
            length = [
                r
                for r in records.values()
                if r["config"] == config and r["stage"] == "length" and r["method"] == method
            ]
            if not length:
                continue
            pair = (length[0]["lr"], length[0]["wd"])
            runs = [
                r
                for r in records.values()
                if r["config"] == config
                and r["method"] == method
                and r["stage"] in ("lrwd", "length")
                and (r["lr"], r["wd"]) == pair
            ]
            runs.sort(key=lambda r: r["train_flops_x"])
            ax.plot(
                [r["train_flops_x"] for r in runs],
                [100 * r["val"]["acc"] for r in runs],
                marker="o",
                color=colours[method],
                label=method,
            )
        for cap in protocol["caps"]:
            ax.axvline(cap, color="grey", linestyle=":", linewidth=1)
        ax.set(title=config, xlabel="training FLOPs / plain at E")
    axes[0][0].set_ylabel("validation accuracy % (seed 0)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
