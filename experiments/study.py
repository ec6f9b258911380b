"""The study engine: one definition, queue, worker pool and record format for every study.

A study is a `Study`: its name, the fields that make a run's key, a function
that lists the runs in queue order (`jobs`), a function that trains one run
and returns its record (`run`), and a function that writes its report from the
records (`report`). `main(study, argv, description, script)` gives every study
the same command line, plus the study's own options (`add_arguments`):

    python experiments/<study>.py [--records PATH] [--workers K] [--deadline S]
                                  [--device NAME] [--quick] [--report-only]

- Records are JSON lines, one per run, keyed by `study.key_fields` (or
  `study.key`); a run whose key is already in the records is never trained
  again, so a study resumes wherever it stopped. With `study.shard`,
  `--records` is a folder holding one file per value of that job field.
- `jobs(options, records)` may hold `None` where a run waits for other records
  (a budget not chosen yet, say): workers wait for them rather than stop.
- Workers are separate processes (`--workers`); each claims the next run in
  queue order through an exclusive file, so no run is trained twice.
- `--deadline` (seconds from now) stops claiming new runs after that time.
- Every record is stamped with the backend, Keras version, device, date and
  the command that produced it (`stamp`).
- `save_predictions` stores a run's per-example predictions (log-probabilities,
  float16, compressed) in an `.npz` file beside the records, named after the
  key, so that any statistic can be recomputed later.
- Pages are written from the records alone (`page_command` names the command
  without the options that only place the page), so they regenerate byte for
  byte; `experiments/stats.py` and `experiments/tables.py` hold the paired
  statistics and the table helpers the reports share.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from experiments import tables

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Study:
    """What a study is: its runs, how one is trained, and its report.

    Attributes:
        name: the study's name (`experiments/<name>.py`).
        key_fields: the job fields that make a run's key, in order.
        jobs: `jobs(options, records) -> list`, the runs in queue order, each a
            dict with at least `key_fields`; `None` for a run that waits for
            other records.
        run: `run(job, options) -> dict`, trains one run and returns its record.
        report: `report(records, options, argv)`, writes the study's pages.
        describe: `describe(record) -> str`, a one-line summary printed per run.
        add_arguments: `add_arguments(parser)`, the study's own options.
        finish: `finish(options)`, settles options after parsing (may call
            `parser.error` through `options.error`).
        records: default records path, relative to the repository ("": the
            study's `finish` sets it).
        key: `key(job) -> str`, a run's key where it is not the plain join
            of `key_fields` (`job_key`).
        shard: a job field; with it, `--records` is a folder and each run's
            record goes to `<name>-<value>.jsonl` there.
    """

    name: str
    key_fields: tuple
    jobs: Callable
    run: Callable
    report: Callable
    describe: Callable = lambda record: record["key"]
    add_arguments: Callable = lambda parser: None
    finish: Callable = lambda options: None
    records: str = ""
    key: Callable = None
    shard: str = ""

    def key_of(self, job):
        """The key of a run's record."""
        return job_key(job, self.key_fields) if self.key is None else self.key(job)

    def records_file(self, records, job):
        """The file a run's record is appended to."""
        if not self.shard:
            return Path(records)
        return Path(records) / f"{self.name}-{job[self.shard]}.jsonl"


def job_key(job, fields):
    """The key of a run: its `fields`' values joined by `|`."""
    return "|".join(str(job[k]) for k in fields)


def load_records(path):
    """The records by key, the last per key ({} if absent).

    `path` is one JSON-lines file, or a folder whose `*.jsonl` files are read
    in name order (a sharded study's records).
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    records = {}
    for file in files:
        if file.exists():
            for line in file.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    records[record["key"]] = record
    return records


def append_record(path, record):
    """Appends one record as a JSON line (a whole line per write, so workers never interleave)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def stamp(record, options):
    """Adds where and how the run was made: backend, Keras version, device, date, command."""
    import keras

    record.update(
        backend=keras.backend.backend(),
        keras=keras.__version__,
        device=options.device,
        date=datetime.date.today().isoformat(),
        command=options.command,
    )
    return record


def predictions_path(records, key):
    """Where a run's per-example predictions live: `<records stem>/<key>.npz`."""
    name = key.replace("|", "_").replace("/", "-")
    return Path(records).with_suffix("") / f"{name}.npz"


def save_predictions(records, key, **arrays):
    """Stores per-example arrays of a run next to the records.

    Probabilities are stored as float16 log-probabilities (`log_<name>`),
    labels and other integer arrays as int16: a temperature or a bootstrap
    can be fitted to them later without retraining.
    """
    path = predictions_path(records, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            logp = np.log(np.clip(value.astype("float64"), 1e-30, None))
            stored[f"log_{name}"] = np.maximum(logp, -60.0).astype("float16")
        else:
            stored[name] = value.astype("int16")
    np.savez_compressed(path, **stored)
    return path


def load_predictions(records, key):
    """The arrays `save_predictions` stored, probabilities back as float64."""
    out = {}
    with np.load(predictions_path(records, key)) as data:
        for name in data.files:
            if name.startswith("log_"):
                out[name[4:]] = np.exp(data[name].astype("float64"))
            else:
                out[name] = data[name].astype("int64")
    return out


def claim(claims, key):
    """Whether this worker is the first to claim `key` (an exclusive file per key)."""
    try:
        path = Path(claims) / key.replace("|", "_").replace("/", "-")
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def pending(study, options):
    """The queue (`None` where a run waits) and its `(job, key)` pairs not yet recorded."""
    records = load_records(options.records)
    jobs = study.jobs(options, records)
    todo = []
    for job in jobs:
        if job is not None:
            key = study.key_of(job)
            if key not in records:
                todo.append((job, key))
    return jobs, todo


def run_worker(study, options, worker):
    """Trains runs in queue order until none is left, or the deadline passes."""
    done = 0
    while True:
        if options.deadline and time.time() > options.deadline:
            print(f"[worker {worker}] deadline reached after {done} runs", flush=True)
            return
        jobs, todo = pending(study, options)
        found = next(((job, key) for job, key in todo if claim(options.claims, key)), None)
        if found is None:
            if None not in jobs:
                return
            time.sleep(5)
            continue
        job, key = found
        record = study.run(job, options)
        record["key"] = key
        append_record(study.records_file(options.records, job), stamp(record, options))
        done += 1
        print(f"[worker {worker}] {study.describe(record)}", flush=True)


def parser(study, description):
    """The command line every study shares, with the study's own options added."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--records", default=str(ROOT / study.records) if study.records else None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds from now after which no new run starts (workers get the time itself)",
    )
    p.add_argument("--device", default=f"{platform.machine()} CPU")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny data, one epoch")
    study.add_arguments(p)
    return p


def parse(study, argv, description):
    """The options of `argv`: the engine's and the study's, settled by `study.finish`."""
    p = parser(study, description)
    options = p.parse_args(argv)
    options.error = p.error
    options.command = " ".join(
        ["python", f"experiments/{study.name}.py"]
        + [shlex.quote(a) for a in _without_internal(argv)]
    )
    study.finish(options)
    return options


# Options that say how a study runs or where its pages go, not what they say.
RUN_OPTIONS = ("--workers", "--worker", "--claims", "--deadline", "--device", "--report", "--out")


def page_command(name, argv, flags=("--report-only",)):
    """The command a generated page names: `python experiments/<name>.py` and `argv`.

    Leaves out `flags` and `RUN_OPTIONS` (with their values), which change
    neither the records read nor the page; absolute paths inside the
    repository are shown relative to it, so a page regenerates byte for byte
    wherever it is written.
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        if arg in flags or option in RUN_OPTIONS:
            skip = "=" not in arg and option in RUN_OPTIONS
            continue
        if arg.startswith("/"):
            arg = tables.shown_path(arg, ROOT)
        out.append(shlex.quote(arg))
    return " ".join(["python", f"experiments/{name}.py", *out])


def _without_internal(argv):
    """`argv` less the options the engine adds to its workers' command lines."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--worker", "--claims", "--deadline"):
            skip = True
            continue
        out.append(arg)
    return out


def main(study, argv, description, script):
    """Runs `study` from its command line: workers, then the report.

    `script` is the study module's file: each worker is that script again,
    with `--worker` and a shared claims folder. No worker starts where every
    run of the queue is recorded already.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse(study, argv, description)
    folder = Path(options.records) if study.shard else Path(options.records).parent
    folder.mkdir(parents=True, exist_ok=True)
    if options.worker is not None:
        run_worker(study, options, options.worker)
        return options
    jobs, todo = ([], []) if options.report_only else pending(study, options)
    if todo or None in jobs:
        claims = tempfile.mkdtemp(prefix=f"{study.name}-claims-")
        rest = _without_internal(argv)
        deadline = (
            [] if options.deadline is None else ["--deadline", str(time.time() + options.deadline)]
        )
        procs = [
            subprocess.Popen(
                [sys.executable, script, *rest, *deadline, "--worker", str(i), "--claims", claims]
            )
            for i in range(options.workers)
        ]
        codes = [proc.wait() for proc in procs]
        shutil.rmtree(claims, ignore_errors=True)
        if any(codes):
            raise SystemExit(f"a worker failed with exit codes {codes}")
    study.report(load_records(options.records), options, argv)
    return options
