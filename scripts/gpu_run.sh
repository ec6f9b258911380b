#!/usr/bin/env bash
# One call on a GPU machine lent for a short time, without network (docs/GPU.md):
#
#   bash scripts/gpu_run.sh [--quick] [--deadline SECONDS] [--out DIR] [--resume-from DIR]
#        [--steps fair,speed] [--fair-share 0.6] [--fair-workers N] [--carry DIR]
#   bash scripts/gpu_run.sh --report-only [--out DIR]     # step 5 alone, on any machine
#
# 1. Installs the wheels of carry/wheels (scripts/prepare_gpu_carry.sh) that
#    the interpreter lacks into a temporary folder on PYTHONPATH.
# 2. Checks that JAX and PyTorch see the GPU and appends the machine, the
#    versions and the date to DIR/environment.jsonl.
# 3. `fair`: the compute-fair study on the full Fashion-MNIST training set
#    (50,000 images, 10,000 held out for validation) from carry/fashion-mnist,
#    tutorial convnet and ResNet-20, on JAX; plain, the better compute-matched
#    plain arm and `wrap` defaults of seed 0 first. Records: DIR/fair-gpu.jsonl.
# 4. `speed`: benchmarks/throughput.py with the input on the device, on JAX and
#    PyTorch, float32 then mixed_bfloat16 and mixed_float16, one process per
#    cell. Records: DIR/throughput-gpu.jsonl.
# 5. Reports from all records: DIR/FAIR_GPU.md and DIR/THROUGHPUT_GPU.md, each
#    ending with the machines, versions and dates of DIR/environment.jsonl.
#
# Everything stops by --deadline seconds after the start (default 540, for a
# 10-minute call): the study gets --fair-share of it and stops claiming runs
# early enough to finish the ones in flight; the speed cells run while time is
# left, each stopped at the deadline. Every finished run is one JSON line, and
# a run whose line is there is skipped, so rerunning continues where the
# records stop; --resume-from copies earlier records (such as the committed
# docs/results/gpu) into a fresh --out first.
#
# --quick: tiny random data and tiny benchmark sizes on this machine's CPU
# (no GPU check, no carry folder needed), in one to two minutes; the test suite
# runs it. PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

quick=0
report_only=0
deadline=540
out=docs/results/gpu
resume_from=""
steps=fair,speed
fair_share=0.6
fair_workers=""
carry=carry
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --deadline) deadline=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --resume-from) resume_from=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --fair-share) fair_share=$2; shift 2 ;;
    --fair-workers) fair_workers=$2; shift 2 ;;
    --carry) carry=$2; shift 2 ;;
    --report-only) report_only=1; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
start=$(date +%s)
end=$(( start + ${deadline%.*} ))
# Kept for the reports after the last run.
REPORT_RESERVE=$(( quick ? 0 : 30 ))

log() { echo "[gpu_run +$(( $(date +%s) - start )) s] $*"; }
die() { echo "gpu_run: $*" >&2; exit 1; }
left() { echo $(( end - $(date +%s) )); }

# Runs a command in its own process group and ends the whole group (fair.py's
# workers included) at the epoch second $1; returns the command's status, or
# 124 when it was stopped.
run_until() {
  local stop=$1
  shift
  if command -v setsid >/dev/null; then
    setsid "$@" &
  else
    "$@" &
  fi
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$stop" ]; then
      log "stopping at the deadline: $*"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      sleep 3
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 1
  done
  wait "$pid"
}

# Installs what the interpreter lacks of keras and its requirements from
# $carry/wheels into $site.
install_missing_packages() {
  local missing
  missing=$("$PY" - <<'EOF'
import importlib.util

# Distribution: module. keras' requirements and theirs, less numpy.
MODULES = {
    "keras": "keras", "absl-py": "absl", "rich": "rich", "namex": "namex",
    "optree": "optree", "h5py": "h5py", "ml-dtypes": "ml_dtypes",
    "packaging": "packaging", "markdown-it-py": "markdown_it", "mdurl": "mdurl",
    "pygments": "pygments", "typing-extensions": "typing_extensions",
}
print(" ".join(d for d, m in MODULES.items() if importlib.util.find_spec(m) is None))
EOF
  )
  [ -n "$missing" ] || return 0
  [ -d "$carry/wheels" ] || die "$PY lacks $missing and $carry/wheels does not exist:
  run scripts/prepare_gpu_carry.sh and carry 'carry' (docs/GPU.md)"
  log "installing $missing from $carry/wheels into $site"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
      --find-links "$carry/wheels" --target "$site" $missing \
      || die "no wheels of $missing for $("$PY" -V) in $carry/wheels:
  run scripts/prepare_gpu_carry.sh --python-version with this machine's version"
    return 0
  fi
  # Without pip a wheel is a zip file: unpack the one for this interpreter.
  local tag dist wheel
  tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  for dist in $missing; do
    wheel=$(ls "$carry/wheels" | grep -i "^${dist//-/_}-" \
            | grep -E -- "-(py3-none-any|py2\.py3-none-any|$tag-$tag-[a-z0-9_.]*x86_64)\.whl$" \
            | head -n 1 || true)
    [ -n "$wheel" ] || die "no wheel of $dist for $tag in $carry/wheels"
    "$PY" -m zipfile -e "$carry/wheels/$wheel" "$site"
  done
}

# Appends the machine and the versions to $out/environment.jsonl and sets
# $device; fails unless JAX and PyTorch see the GPU (quick: the CPU will do).
check_machine() {
  device=$(KERAS_BACKEND=jax QUICK=$quick OUT_DIR="$out" DEADLINE="$deadline" "$PY" - <<'EOF'
import datetime
import importlib.util
import json
import os
import platform
import subprocess

import jax
import keras
import numpy
import torch

quick = os.environ["QUICK"] == "1"
found = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": quick,
    "deadline_s": float(os.environ["DEADLINE"]), "python": platform.python_version(),
    "cores": os.cpu_count(), "keras": keras.__version__, "numpy": numpy.__version__,
    "jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
    "torch": torch.__version__, "jax_devices": [str(d) for d in jax.devices()],
    "torch_cuda": torch.cuda.is_available(),
    "tensorflow": ("installed" if importlib.util.find_spec("tensorflow")
                   else "not installed (no TensorFlow GPU build on this machine)"),
}
try:
    found["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, check=True).stdout.strip()
except (OSError, subprocess.CalledProcessError):
    found["nvidia_smi"] = None
with open(os.path.join(os.environ["OUT_DIR"], "environment.jsonl"), "a") as f:
    f.write(json.dumps(found) + "\n")
if quick:
    print(f"{platform.machine()} CPU (quick)")
else:
    if jax.devices()[0].platform != "gpu":
        raise SystemExit(f"JAX sees no GPU: {found['jax_devices']}")
    if not torch.cuda.is_available():
        raise SystemExit("PyTorch sees no GPU (torch.cuda.is_available() is False)")
    print(torch.cuda.get_device_name(0))
EOF
  ) || die "the machine check failed (see above)"
  log "device: $device; $(tail -n 1 "$out/environment.jsonl")"
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -n "$resume_from" ] && [ -d "$resume_from" ] && [ "$(cd "$resume_from" && pwd)" != "$out" ]; then
  for file in "$resume_from"/*.jsonl; do
    [ -e "$file" ] || continue
    [ -e "$out/$(basename "$file")" ] || cp "$file" "$out/"
  done
  log "continuing from the records in $resume_from"
fi

# 1-2. Packages and the machine ---------------------------------------------------
site=$(mktemp -d "${TMPDIR:-/tmp}/gpu-run-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
device=""
[ "$report_only" = 1 ] || install_missing_packages
export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2
# Several processes share the GPU (the study's workers): JAX takes memory as
# it needs it instead of 75 % of the GPU up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ "$quick" = 1 ]; then
  # Tiny programs, compiled once each: XLA's CPU optimisations cost more than
  # they save (as in scripts/test.sh).
  export XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0}"
fi
if [ "$report_only" = 1 ]; then
  steps=""
else
  check_machine
fi

# 3. The compute-fair study ---------------------------------------------------------
if [ "$quick" = 1 ]; then
  # One configuration keeps the quick run within a minute on two cores.
  fair_args=(--quick --configs fashion-convnet)
else
  fair_args=(--configs fashion-convnet,fashion-resnet8,fashion-resnet20 --fashion-train 50000
             --fashion-dir "$carry/fashion-mnist")
fi
# The confirmation arms and the longer-schedule lead (the defaults at 2E).
fair_args+=(--arms plain,wrap-n2,plain-short,wrap-mimo,plain-long2,ensemble,wrap-n2-long2
            --priority-arms plain,wrap-n2,wrap-mimo
            --records "$out/fair-gpu.jsonl" --report "$out/FAIR_GPU.md" --device "$device")
# fair.py writes its report when its workers are done; only a study stopped
# at the deadline (or not run) needs it written at the end.
fair_report=1
if [[ ",$steps," == *",fair,"* ]]; then
  [ "$quick" = 1 ] || [ -d "$carry/fashion-mnist" ] || die "$carry/fashion-mnist does not exist"
  fair_end=$(awk -v s="$(date +%s)" -v l="$(( $(left) - REPORT_RESERVE ))" -v f="$fair_share" \
             'BEGIN { printf "%d", s + l * f }')
  budget=$(( fair_end - $(date +%s) ))
  # Claiming stops early enough for the runs in flight to finish.
  claim=$(( quick ? budget : budget * 3 / 4 ))
  if [ "$budget" -gt 0 ]; then
    log "fair: ${budget} s, no new run after ${claim} s"
    status=0
    run_until "$fair_end" env KERAS_BACKEND=jax "$PY" experiments/fair.py "${fair_args[@]}" \
      --workers "${fair_workers:-$(( quick ? 1 : 2 ))}" --deadline "$claim" || status=$?
    [ "$status" = 0 ] || [ "$status" = 124 ] || die "fair.py failed with exit $status"
    [ "$status" = 124 ] || fair_report=0
  fi
fi

# 4. Speed tables ------------------------------------------------------------------
if [ "$quick" = 1 ]; then
  speed_args=(--backbones cnn --ns 3 --image-shape 6,6,1 --samples 12 --batch 6
              --predict-batch 12 --repeats 1 --warmup 1)
  # One cell: tests/test_benchmarks.py covers --device-input on every backend.
  cells=("torch mixed_bfloat16")
else
  speed_args=(--backbones cnn,resnet --ns 3 --samples 3072 --batch 192 --predict-batch 768
              --repeats 5)
  cells=("jax float32" "torch float32" "jax mixed_bfloat16" "torch mixed_bfloat16"
         "jax mixed_float16" "torch mixed_float16")
fi
if [[ ",$steps," == *",speed,"* ]]; then
  for cell in "${cells[@]}"; do
    read -r backend policy <<<"$cell"
    if [ "$(( $(left) - REPORT_RESERVE ))" -le $(( quick ? 0 : 45 )) ]; then
      log "speed: no time left for $backend $policy"
      continue
    fi
    log "speed: $backend $policy"
    policy_args=()
    [ "$policy" = float32 ] || policy_args=(--dtype-policy "$policy")
    status=0
    run_until $(( end - REPORT_RESERVE )) env KERAS_BACKEND="$backend" "$PY" \
      benchmarks/throughput.py "${speed_args[@]}" "${policy_args[@]}" --device-input \
      --no-memory --records "$out/throughput-gpu.jsonl" || status=$?
    [ "$status" = 0 ] || log "speed: $backend $policy ended with exit $status"
  done
fi

# 5. Reports -----------------------------------------------------------------------
if [ "$fair_report" = 1 ] && [ -s "$out/fair-gpu.jsonl" ]; then
  KERAS_BACKEND=jax "$PY" experiments/fair.py "${fair_args[@]}" --report-only \
    || log "the study's report failed; its records are complete"
fi
if [ -s "$out/throughput-gpu.jsonl" ]; then
  KERAS_BACKEND=jax "$PY" benchmarks/throughput.py --tables "$out/throughput-gpu.jsonl" \
    >"$out/THROUGHPUT_GPU.md" || log "the speed tables failed; their records are complete"
fi
if [ -s "$out/environment.jsonl" ]; then
  OUT_DIR="$out" "$PY" - <<'EOF'
import json
import os
from pathlib import Path

out = Path(os.environ["OUT_DIR"])
runs = [json.loads(l) for l in (out / "environment.jsonl").read_text().splitlines() if l.strip()]
# Quick runs describe the machine only when there is nothing else.
runs = [r for r in runs if not r["quick"]] or runs
machines = {}
for r in runs:
    key = (r["nvidia_smi"] or "no GPU (quick run)", r["cores"], r["python"], r["keras"],
           r["jax"], r["jaxlib"], r["torch"], r["tensorflow"])
    machines.setdefault(key, []).append(r["date"][:10])
lines = ["", "## Machines and versions", "",
         "From `environment.jsonl`, one line per call of `scripts/gpu_run.sh`.", ""]
for (gpu, cores, python, keras, jax, jaxlib, torch, tf), dates in machines.items():
    lines.append(f"- {gpu}, {cores} cores; Python {python}, Keras {keras}, JAX {jax} "
                 f"(jaxlib {jaxlib}), PyTorch {torch}; TensorFlow {tf}; "
                 f"{min(dates)} to {max(dates)}.")
for name in ("FAIR_GPU.md", "THROUGHPUT_GPU.md"):
    if (out / name).exists():
        with open(out / name, "a") as f:
            f.write("\n".join(lines) + "\n")
EOF
fi
log "done; records in $out:"
ls -l "$out"
