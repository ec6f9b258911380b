#!/usr/bin/env bash
# Sets up the environment, then runs the test suite once per backend, each in
# its own pytest process (Keras fixes the backend at import). Extra arguments
# go to pytest. BACKENDS="jax torch" runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VENV="${VENV:-.venv}"
export TF_CPP_MIN_LOG_LEVEL=2
status=0
for backend in ${BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend"
  start=$(date +%s)
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
  rc=$?
  echo "=== KERAS_BACKEND=$backend: exit $rc in $(( $(date +%s) - start )) s"
  # pytest's exit 5 means no test ran: a failure here, never a pass.
  [ $rc -eq 0 ] || status=1
done
exit $status
