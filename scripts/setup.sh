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
# keras-hub for its image classifiers. Its own requirements pull the full
# `tensorflow` package (through tensorflow-text, which its classifiers do not
# use) next to tensorflow-cpu, so it is installed without them and its other
# requirements are named here.
"$VENV/bin/python" -m pip install -q -c constraints-cpu.txt kagglehub==1.0.2 kagglesdk==0.1.28 \
    sentencepiece tokenizers regex pyyaml
"$VENV/bin/python" -m pip install -q --no-deps keras-hub==0.32.0
