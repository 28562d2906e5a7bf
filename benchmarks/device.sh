#!/usr/bin/env bash
# Tests and benchmarks on a machine with an NVIDIA GPU, in about 8 minutes.
#
# Usage, from anywhere in a checkout:
#
#     bash benchmarks/device.sh
#
# Creates a virtual environment (.venv-gpu, or $VENV), installs the CUDA 12
# build of jax (JAX_VERSION, default 0.10.2: the version the recorded CPU
# numbers used) and jaxmargin with its test and bench extras, then runs:
#
#   1. a fast tier of the test suite, single process: what the losses compile
#      to (exports, vmap, platform constants, reproducible sums), both
#      multi-label methods against torch, and the fused losses against the
#      unfused ones;
#   2. benchmarks/run.py --quick: the loss targets, the vmap rows and a
#      short scaling run;
#   3. benchmarks/calibrate.py --quick: both method switches timed over the
#      label count, with the crossovers to put in the per-platform constants.
#
# JSON results go to benchmarks/results/ (<gpu-name>-quick.json and
# calibrate-<gpu-name>-quick.json) and the output of every stage to
# benchmarks/results/device-<date>.log. Every stage runs even if an earlier
# one fails; the exit status is non-zero if any did. pip reads its usual
# variables (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX=1 for a wheelhouse
# on a machine without a registry). torch (the tests' oracle, run on the CPU)
# comes with its CUDA libraries from the default index: set TORCH_INDEX_URL to
# an index of CPU-only torch wheels to skip those gigabytes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv-gpu}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
PYTHON="${PYTHON:-python3}"
RESULTS="$ROOT/benchmarks/results"
mkdir -p "$RESULTS"
LOG="$RESULTS/device-$(date -u +%Y%m%dT%H%M%SZ).log"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv | tee -a "$LOG" || echo "nvidia-smi not found; going on" | tee -a "$LOG"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "jax[cuda12]==$JAX_VERSION"
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  "$PY" -m pip install --quiet "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
fi
# jax is installed already, so the extras keep it (pip upgrades only if needed).
"$PY" -m pip install --quiet -e ".[test,bench]"

"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import jax
print("jax", jax.__version__, "devices:", jax.devices())
if jax.default_backend() != "gpu":
  raise SystemExit("jax sees no GPU: the CUDA build did not load (see the messages above)")
EOF

failed=()
stage() {
  local name="$1" limit="$2"
  shift 2
  echo "=== $name (at most ${limit}s): $*" | tee -a "$LOG"
  local status=0
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG" || status=$?
  if [[ "$status" -ne 0 ]]; then
    failed+=("$name (exit $status)")
  fi
}

# One process: pytest-xdist's workers would each take most of the GPU's
# memory (XLA preallocates), and the project's addopts start them.
# About 2.5 minutes on a 2-core CPU; a GPU compiles each program more slowly.
stage tests 210 "$PY" -m pytest -p no:xdist -p no:cacheprovider -o addopts= -q -rfE \
  tests/test_export.py tests/test_accelerators.py tests/test_multilabel_methods.py \
  tests/test_linear.py::test_value_and_gradients_equal_the_unfused_loss \
  tests/test_linear.py::test_auto_method_on_either_side_of_the_switch
stage benchmark 120 "$PY" benchmarks/run.py --quick --out "$RESULTS"
stage calibrate 75 "$PY" benchmarks/calibrate.py --quick --out "$RESULTS"

echo "log: $LOG"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed: ${failed[*]}" | tee -a "$LOG"
  exit 1
fi
