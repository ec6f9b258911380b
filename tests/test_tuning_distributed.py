"""tuning/distributed.py: a chief oracle and two workers on 127.0.0.1."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

pytest.importorskip("keras_tuner")
pytest.importorskip("grpc")

from script_loader import load_script  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "tuning" / "distributed.py"


def _load_launcher():
    return load_script("tuning/distributed.py", "agrlearn_tuning_distributed")


def test_chief_and_two_workers_complete_every_trial(tmp_path):
    command = [
        sys.executable,
        str(LAUNCHER),
        "--workers",
        "2",
        "--timeout",
        "540",
        "--",
        "--dataset",
        "digits",
        "--samples",
        "64",
        # A cap of 2 x 2 plain epochs: a width-2 trial fits one epoch.
        "--epochs",
        "2",
        "--trials",
        "2",
        "--n",
        "1",
        "2",
        "--width",
        "1",
        "2",
        "--verbose",
        "0",
        "--output",
        str(tmp_path),
    ]
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    # A session of its own, so that the launcher and everything it started
    # can be killed together should the launcher itself hang.
    launcher = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = launcher.communicate(timeout=580)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0, out[-6000:]
    project = tmp_path / "digits_random"
    lines = (project / "leaderboard.md").read_text().strip().splitlines()[2:]
    assert len(lines) == 2 and all(line.endswith("| COMPLETED |") for line in lines)
    assert (project / "best_model.keras").exists()
    assert "[chief] Leaderboard (2 trials" in out
    # Nothing left running: a rerun would only print the report again.
    assert json.loads((project / "oracle.json").read_text())["ongoing_trials"] == {}
    for worker in ("worker0", "worker1"):
        assert (project / f"{worker}.json").exists()


def test_launcher_refuses_overwrite():
    launcher = _load_launcher()
    with pytest.raises(ValueError, match="share one output directory"):
        launcher.launch(2, ["--overwrite"])


def test_free_port_is_bindable():
    import socket

    port = _load_launcher().free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_failed_worker_stops_every_process(tmp_path, monkeypatch):
    # A stand-in for search.py: worker1 fails at once, the others would hang.
    fake = tmp_path / "fake_search.py"
    fake.write_text(
        "import os, sys, time\n"
        "if os.environ['KERASTUNER_TUNER_ID'] == 'worker1':\n"
        "    sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    launcher = _load_launcher()
    monkeypatch.setattr(launcher, "SEARCH", str(fake))
    stopped = []
    stop = launcher._stop
    monkeypatch.setattr(
        launcher, "_stop", lambda processes: stopped.extend(processes) or stop(processes)
    )
    assert launcher.launch(2, [], timeout=60) == 1
    assert len(stopped) == 3 and all(process.poll() is not None for process in stopped)
