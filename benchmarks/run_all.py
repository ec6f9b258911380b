"""Runs benchmarks/throughput.py once per backend, then writes tables and a plot.

Each backend runs in its own process, one after the other, so they never
compete for the CPU. Arguments after `--` go to throughput.py unchanged.

    python benchmarks/run_all.py --results benchmarks/results -- --repeats 5

`--report-only` rebuilds `tables.md` and the plot from existing results.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
# Which median the tables and plot use: "cpu" (process CPU seconds) or "wall".
CLOCK = "cpu"


def thread_caps(threads):
    """Environment that caps every backend's thread pools at `threads`."""
    if not threads:
        return {}
    return {
        "OMP_NUM_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}",
    }


def run(backends, results, extra, threads, parallel):
    processes = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        env.update(thread_caps(threads))
        out = results / f"{backend}.json"
        command = [sys.executable, str(HERE / "throughput.py"), f"--out={out}", *extra]
        print(f"=== {backend}: {' '.join(command)}", flush=True)
        processes.append(subprocess.Popen(command, env=env))
        if not parallel:
            processes[-1].wait()
    for process in processes:
        if process.wait():
            raise SystemExit(f"{process.args} failed with exit {process.returncode}")


def load(results, backends):
    reports = {}
    for backend in backends:
        path = results / f"{backend}.json"
        if path.exists():
            reports[backend] = json.loads(path.read_text())
    return reports


def _medians(report):
    key = "median_cpu_s" if CLOCK == "cpu" else "median_s"
    return {(r["backbone"], r["variant"], r["n"], r["phase"]): r[key] for r in report["results"]}


def spread(report, backbone):
    """Median relative distance to the median, over all tasks: the noise floor."""
    key = "cpu_seconds" if CLOCK == "cpu" else "seconds"
    deviations = []
    for r in report["results"]:
        if r["backbone"] == backbone:
            middle = statistics.median(r[key])
            deviations += [abs(v - middle) / middle for v in r[key]]
    return statistics.median(deviations)


def throughput_table(report, backbone):
    """One row per n; times are medians, ratios are time ratios unless noted."""
    t = _medians(report)
    samples = report["args"]["samples"]
    rate = lambda seconds: f"{samples / seconds:,.0f}"  # noqa: E731
    fit_plain, predict_plain = t[backbone, "plain", 1, "fit"], t[backbone, "plain", 1, "predict"]
    lines = [
        "| n | fit samples/s | fit wrapped / limit | predict replicate samples/s "
        "| replicate / limit | replicate / plain | predict group samples/s "
        "| group / limit | group throughput / (n x plain) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| plain | {rate(fit_plain)} | | {rate(predict_plain)} | | | | | |",
    ]
    for n in report["args"]["ns"]:
        fit = t[backbone, "replicate", n, "fit"]
        replicate = t[backbone, "replicate", n, "predict"]
        group = t[backbone, "group", n, "predict"]
        lines.append(
            f"| {n} | {rate(fit)} | {fit / t[backbone, 'limit', n, 'fit']:.3f} "
            f"| {rate(replicate)} | {replicate / t[backbone, 'limit-replicate', n, 'predict']:.3f} "
            f"| {replicate / predict_plain:.3f} | {rate(group)} "
            f"| {group / t[backbone, 'limit-group', n, 'predict']:.3f} "
            f"| {predict_plain / group / n:.2f} |"
        )
    return "\n".join(lines)


def worst_limit_ratios(t, backbone, ns):
    """Worst wrapped / limit ratio over n, for fit and for predict (both protocols)."""
    fit = max(t[backbone, "replicate", n, "fit"] / t[backbone, "limit", n, "fit"] for n in ns)
    predict = max(
        max(
            t[backbone, "replicate", n, "predict"] / t[backbone, "limit-replicate", n, "predict"],
            t[backbone, "group", n, "predict"] / t[backbone, "limit-group", n, "predict"],
        )
        for n in ns
    )
    return fit, predict


def targets_table(reports):
    """The worst case of each target's ratio, per backend and backbone."""
    lines = [
        "| backend | backbone | fit wrapped / limit (<= 1.02) | predict wrapped / limit "
        "(<= 1.02) | replicate / plain (<= 1.15) | group / (n x plain) (>= 0.8) |",
        "|---|---|---|---|---|---|",
    ]
    for backend, report in reports.items():
        t = _medians(report)
        ns = report["args"]["ns"]
        for b in report["args"]["backbones"]:
            plain = t[b, "plain", 1, "predict"]
            fit, predict = worst_limit_ratios(t, b, ns)
            replicate = max(t[b, "replicate", n, "predict"] / plain for n in ns)
            group = min(plain / t[b, "group", n, "predict"] / n for n in ns)
            lines.append(
                f"| {backend} | {b} | {fit:.3f} | {predict:.3f} | {replicate:.3f} | {group:.2f} |"
            )
    return "\n".join(lines)


def memory_table(report):
    rows = report["memory"]
    if not rows:
        return "(not measured)"
    xla = "xla_temp_mib" in rows[0]
    cuda = "cuda_peak_growth_mib" in rows[0]
    head = "| inference | n | input batch MiB | aggregated tensor MiB | peak RSS growth MiB |"
    rule = "|---|---|---|---|---|"
    if xla:
        head += " XLA output MiB | XLA temporaries MiB |"
        rule += "---|---|"
    if cuda:
        head += " CUDA peak growth MiB |"
        rule += "---|"
    lines = [head, rule]
    for r in rows:
        line = (
            f"| {r['inference']} | {r['n']} | {r['input_mib']:.1f} "
            f"| {r['aggregated_mib']:.1f} | {r['peak_growth_mib']:.1f} |"
        )
        if xla:
            line += f" {r['xla_output_mib']:.1f} | {r['xla_temp_mib']:.1f} |"
        if cuda:
            line += f" {r['cuda_peak_growth_mib']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def tables(reports):
    parts = ["### Targets, worst case over n\n", targets_table(reports) + "\n"]
    for backend, report in reports.items():
        accelerator = report["machine"].get("accelerator")
        parts.append(f"### {backend}" + (f" on {accelerator}" if accelerator else "") + "\n")
        parts.append(f"Command: `{report['command']}`  ")
        parts.append(
            f"jit_compile: {report['jit_compile']}; "
            f"dtype policy: {report['args'].get('dtype_policy') or 'float32'}; "
            f"threads: {report.get('threads')}; "
            f"measuring took {report['measure_s']:.0f} s; medians of {CLOCK} seconds.\n"
        )
        for backbone in report["args"]["backbones"]:
            parts.append(
                f"**{backbone}** (repeat-to-repeat spread: median "
                f"{spread(report, backbone):.1%} from the median)\n"
            )
            parts.append(throughput_table(report, backbone) + "\n")
        parts.append(f"**Aggregate memory, batch {report['args']['memory_batch']}**\n")
        parts.append(memory_table(report) + "\n")
    return "\n".join(parts)


def plot(reports, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = next(iter(reports.values()))["args"]["backbones"]
    figure, axes = plt.subplots(
        len(backbones),
        len(reports),
        figsize=(4 * len(reports), 3.2 * len(backbones)),
        squeeze=False,
    )
    for column, (backend, report) in enumerate(reports.items()):
        t = _medians(report)
        samples = report["args"]["samples"]
        ns = [1] + report["args"]["ns"]
        for row, backbone in enumerate(backbones):
            ax = axes[row][column]
            for label, variant, phase, marker in (
                ("fit", "replicate", "fit", "o"),
                ("predict, replicate", "replicate", "predict", "s"),
                ("predict, group", "group", "predict", "^"),
            ):
                seconds = [t[backbone, "plain", 1, phase]] + [
                    t[backbone, variant, n, phase] for n in ns[1:]
                ]
                ax.plot(ns, [samples / s for s in seconds], marker=marker, label=label)
            ax.set_title(f"{backbone}, {backend}")
            ax.set_xticks(ns)
            ax.set_xlabel("n (1 = plain backbone)")
            ax.set_ylabel(f"samples per {CLOCK} second")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--results", default=str(HERE / "results"), type=pathlib.Path)
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks_throughput.png"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="thread cap, 0: backend default")
    parser.add_argument(
        "--parallel", action="store_true", help="run the backends at once (use with --clock cpu)"
    )
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args, extra = parser.parse_known_args(argv)
    global CLOCK
    CLOCK = args.clock
    extra = [a for a in extra if a != "--"]
    backends = args.backends.split(",")
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run(backends, args.results, extra, args.threads, args.parallel)
    reports = load(args.results, backends)
    (args.results / "tables.md").write_text(tables(reports))
    plot(reports, args.plot)
    print(f"wrote {args.results / 'tables.md'} and {args.plot}")


if __name__ == "__main__":
    main()
