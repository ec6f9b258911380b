"""Runs a distributed search on this machine: one chief oracle, K workers.

KerasTuner's own chief/worker engine: every process runs `tuning/search.py`
with the same arguments and the same output directory. The chief
(`KERASTUNER_TUNER_ID=chief`) serves the oracle on
`KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT` and trains nothing; each worker
(`KERASTUNER_TUNER_ID=worker0`, ...) asks it for trials until none are left.
When the search ends the chief prints the leaderboard and saves the best
model, as a local search does. Output lines carry the process's name.

Arguments this launcher does not know go to `search.py`:

    python tuning/distributed.py --workers 2 -- --dataset digits --trials 8

To spread the same job across hosts, start the same command by hand on each
host with the three variables set (see docs/TUNING.md); all hosts must share
the output directory.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

SEARCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search.py")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _relay(name, stream):
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()
    stream.close()


def _start(name, search_args, env):
    process = subprocess.Popen(
        [sys.executable, "-u", SEARCH, *search_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    relay = threading.Thread(target=_relay, args=(name, process.stdout), daemon=True)
    relay.start()
    return process, relay


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(workers, search_args, port=None, timeout=None):
    """Starts the chief and `workers` workers, waits for all of them.

    Args:
        workers: int >= 1, the number of worker processes.
        search_args: list of str, the arguments of `search.py`.
        port: int or None, the oracle's port. By default a free one.
        timeout: float or None, seconds after which every process is stopped
            and the search counts as failed. Run again to resume it.

    Returns:
        0 when the chief and every worker finished cleanly, 1 otherwise.
    """
    if "--overwrite" in search_args:
        raise ValueError(
            "The chief and the workers share one output directory, so none of "
            "them may overwrite it: delete the directory or choose another "
            "--output to start afresh."
        )
    port = port or free_port()
    env = dict(
        os.environ,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    print(f"Oracle on 127.0.0.1:{port}, {workers} workers.", flush=True)
    names = ["chief"] + [f"worker{index}" for index in range(workers)]
    started = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for name in names:
            started[name] = _start(name, search_args, dict(env, KERASTUNER_TUNER_ID=name))
        # Polling all of them: workers wait up to an hour for a chief that
        # died, and the chief waits for ever for workers that died.
        while True:
            codes = {name: process.poll() for name, (process, _) in started.items()}
            failed = [name for name, code in codes.items() if code not in (None, 0)]
            if failed:
                print(f"{failed[0]} exited with status {codes[failed[0]]}.", flush=True)
                return 1
            if all(code == 0 for code in codes.values()):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                print(f"Timed out after {timeout} s; run again to resume.", flush=True)
                return 1
            time.sleep(0.5)
    finally:
        _stop([process for process, _ in started.values()])
        for _, relay in started.values():
            relay.join(timeout=5)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments go to search.py (see search.py --help).",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--port", type=int, default=None, help="oracle port (default: a free one)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop everything after this many seconds"
    )
    args, search_args = parser.parse_known_args(argv)
    if search_args[:1] == ["--"]:
        search_args = search_args[1:]
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return launch(args.workers, search_args, port=args.port, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
