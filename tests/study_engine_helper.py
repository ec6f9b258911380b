"""A toy study on the study engine, for tests/test_study_engine.py.

Each `square` run records its seed's square; the `total` run waits until
every `square` run has a record and then sums them. `--pause` makes each run
take that long, so that a deadline can fall between runs. Runs as a script,
because the engine starts each worker as the study's script again.
"""

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import study  # noqa: E402

SEEDS = 4


def jobs(options, records):
    squares = [dict(name="square", seed=seed) for seed in range(SEEDS)]
    values = [records.get(study.job_key(job, ("name", "seed"))) for job in squares]
    if any(value is None for value in values):
        return [*squares, None]
    return [*squares, dict(name="total", seed=-1, total=sum(r["value"] for r in values))]


def run(job, options):
    time.sleep(options.pause)
    value = job["total"] if job["name"] == "total" else job["seed"] ** 2
    return dict(job, value=value, pid=os.getpid())


def report(records, options, argv):
    lines = [f"- {key}: {record['value']}" for key, record in sorted(records.items())]
    Path(options.report).write_text(json.dumps(study.page_command("toy", argv)) + "\n")
    with open(options.report, "a") as f:
        f.write("\n".join(lines) + "\n")


def add_arguments(p):
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--report", required=True)


TOY = study.Study(
    name="toy",
    key_fields=("name", "seed"),
    jobs=jobs,
    run=run,
    report=report,
    add_arguments=add_arguments,
)


def main(argv=None):
    return study.main(TOY, argv, "A toy study.", __file__)


if __name__ == "__main__":
    main()
