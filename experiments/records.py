"""Reading the study records of `reproduce.py`: checkpoints and best recipes.

Shared by `reproduce.py`, which plans runs from earlier records, and
`report.py`, which tabulates them.
"""

import json
from pathlib import Path

import numpy as np

PROTOCOLS = ("replicate", "contextual", "group")


def load_jsonl(path):
    """The records of one JSON-lines file by key, the last per key ({} if absent)."""
    records = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["key"]] = record
    return records


def load_records(records_dir, pattern="records*.jsonl"):
    """The records of the JSON-lines files matching `pattern`, the last per key."""
    records = {}
    for path in sorted(Path(records_dir).glob(pattern)):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["key"]] = record
    return list(records.values())


def checkpoint(record, epoch):
    for point in record["checkpoints"]:
        if point["epoch"] == epoch:
            return point
    return None


def final_epoch(record):
    """The equal-compute point: n * epochs (plain: epochs)."""
    return record["epochs"] * record["n"]


def best_recipes(records, phase, dataset="mnist1d", num_samples=None):
    """(n, width) of the best plain and best AgrLearn by validation accuracy.

    Plain is judged at its best checkpoint (any length); AgrLearn at its
    equal-compute point, so the choice never favours AgrLearn. Only records
    of `num_samples` generated samples count, when it is given.
    """
    groups = {}
    for r in records:
        if r["phase"] != phase or r["dataset"] != dataset or r["repetition"] > 0:
            continue
        if num_samples is not None and r["num_samples"] != num_samples:
            continue
        groups.setdefault((r["n"], r["width"]), []).append(r)
    best = {True: (None, -1.0), False: (None, -1.0)}
    for (n, width), runs in groups.items():
        if n == 1:
            # Checkpoints every run of the recipe has (a study may mix lengths).
            epochs = set.intersection(*({p["epoch"] for p in r["checkpoints"]} for r in runs))
            value = max(np.mean([checkpoint(r, e)["val"]["acc"] for r in runs]) for e in epochs)
        else:
            value = np.mean([checkpoint(r, final_epoch(r))["val"]["acc"] for r in runs])
        if value > best[n == 1][1]:
            best[n == 1] = ((n, width), value)
    return best[True][0], best[False][0]


def best_repetition(records, recipe, num_samples):
    """The repetition share of `recipe` with the best mean validation accuracy.

    Compares the repetition phase's runs with the grid's (share 0) at the
    same length; returns 0.0 when no share beats none.
    """
    n, width = recipe
    groups = {}
    for r in records:
        if (
            r["phase"] in ("grid", "repetition")
            and r["dataset"] == "mnist1d"
            and (r["n"], r["width"]) == recipe
            and r["num_samples"] == num_samples
        ):
            point = checkpoint(r, final_epoch(r))
            if point is not None:
                groups.setdefault(r["repetition"], []).append(point["val"]["acc"])
    if not groups:
        return 0.0
    return max(groups, key=lambda share: (np.mean(groups[share]), -share))
