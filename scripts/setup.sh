#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with keras_agrlearn and all three
# backends on the CPU. VENV=path overrides the location (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# constraints-cpu.txt pins the CPU build of torch; drop it on a GPU machine.
"$VENV/bin/python" -m pip install -q -c constraints-cpu.txt -e ".[all,dev]"
