#!/usr/bin/env bash
# Sets up the environment, then runs the test suite once per backend, each in
# its own pytest process (Keras fixes the backend at import). The backends run
# side by side; each one's log is printed when all are done. Extra arguments
# go to pytest. BACKENDS="jax torch" runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
VENV="${VENV:-.venv}"
export TF_CPP_MIN_LOG_LEVEL=2
# Tests compile many small XLA programs (JAX, TensorFlow with jit_compile) and
# run each briefly: skipping XLA's CPU backend optimisations halves the suite.
export XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0}"
logs=$(mktemp -d)
start=$(date +%s)
for backend in ${BACKENDS:-tensorflow jax torch}; do
  (
    begin=$(date +%s)
    KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
      --durations=10 "$@" >"$logs/$backend.log" 2>&1
    echo $? >"$logs/$backend.rc"
    echo $(( $(date +%s) - begin )) >"$logs/$backend.seconds"
  ) &
done
wait
status=0
for backend in ${BACKENDS:-tensorflow jax torch}; do
  rc=$(cat "$logs/$backend.rc")
  echo "=== KERAS_BACKEND=$backend"
  cat "$logs/$backend.log"
  echo "=== KERAS_BACKEND=$backend: exit $rc in $(cat "$logs/$backend.seconds") s"
  # pytest's exit 5 means no test ran: a failure here, never a pass.
  [ "$rc" -eq 0 ] || status=1
done
echo "=== all backends: $(( $(date +%s) - start )) s, exit $status"
exit $status
