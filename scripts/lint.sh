#!/usr/bin/env bash
# Lint and format check with ruff (configured in pyproject.toml). Uses the
# environment scripts/setup.sh creates; VENV=path overrides it.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
status=0
"$VENV/bin/ruff" check . || status=1
"$VENV/bin/ruff" format --check . || status=1
exit $status
