#!/usr/bin/env bash
# Throughput of the 6-DOF booster on a GPU, core and full configurations, with a fixed
# action and with the MLP. Batch sizes double from 1,024 to 2^24 landers. Each case's
# sweep ends at its first out-of-memory error or after the first batch whose median
# call takes over 3 s. The time limit matters because a rollout keeps only the final
# state, so memory alone would allow batches far too slow for a 15-minute device lease. Writes results.json
# and, where matplotlib is installed, the plot into the run folder (default: $OUT/gpu_bench
# when $OUT is set, else runs/gpu_bench-<time>).
#
# The target machine has Python 3.12 with jax[cuda13], flax, optax, chex and
# orbax-checkpoint, but no brax, mujoco, gymnax, tensorboardX, tqdm, tyro or
# matplotlib, and no package registry. diffland imports without those, and the
# harness runs here with --no-anchors. Carry diffland as a wheel:
#
#   here:   pip wheel --no-deps -w dist .      # dist/diffland-0.1.0-py3-none-any.whl
#   there:  pip install --no-deps --no-index dist/diffland-*.whl
#           bash scripts/gpu_bench.sh [RUN_FOLDER] [extra harness options]
#
# or run it from a copy of the source tree, as here, without installing anything.
#
# Usage: bash scripts/gpu_bench.sh [RUN_FOLDER] [options of python -m experiments.throughput]
set -euo pipefail

caller="$(pwd)"
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
if [ -n "${OUT:-}" ]; then default="$OUT/gpu_bench"; else default="runs/gpu_bench-$stamp"; fi
out="${1:-$default}"
shift || true
# A relative RUN_FOLDER names a folder under the caller's working directory.
if [ "$out" != "$default" ]; then
    case "$out" in /*) ;; *) out="$caller/$out" ;; esac
fi

"$PYTHON" - <<'PY'
import jax

devices = jax.devices()
print("JAX", jax.__version__, "devices:", devices)
if jax.default_backend() != "gpu":
    raise SystemExit("no GPU backend: install the cuda extra (jax[cuda13]) or run on a GPU machine")
PY

batches="1024"
size=1024
while [ "$size" -lt 16777216 ]; do
    size=$((size * 2))
    batches="$batches,$size"
done

# Python's output is unbuffered so that the log shows each batch size as it finishes.
PYTHONUNBUFFERED=1 "$PYTHON" -m experiments.throughput \
    --figures throughput \
    --no-anchors \
    --vehicles rigid_body \
    --batch-sizes "$batches" \
    --until-oom \
    --max-call-seconds 3 \
    --out "$out" \
    "$@"
