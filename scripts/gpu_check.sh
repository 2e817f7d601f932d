#!/usr/bin/env bash
# The checks for a GPU machine in one command: the test suite's fast tests on the GPU,
# then the throughput sweep of scripts/gpu_bench.sh. Writes tests.log, junit.xml and
# the benchmark's run folder into RUN_FOLDER (default: $OUT/gpu_check when $OUT is set,
# else runs/gpu_check-<time>), and exits with the tests' status.
#
# The target machine has Python 3.12 with jax[cuda13], flax, optax, chex,
# orbax-checkpoint, pytest and pytest-xdist, but no brax, gymnax, tensorboardX, tyro or
# cvxpy. The test modules that import those cannot be collected there; pytest lists
# them as collection errors and runs the others. Run it from a copy of the source tree,
# without installing anything.
#
# Time limits, in seconds, so that the whole check fits one 10-minute device command:
# TEST_SECONDS (default 300) for the tests and BENCH_SECONDS (default 180) for the
# sweep. A sweep cut by its limit keeps a results.json with "complete": false and
# every batch size finished before the cut, which bench.log also lists. WORKERS (default 8) sets the pytest-xdist processes that
# share the GPU. On 2 CPU cores (no GPU, with those packages hidden) the same tests
# took 9.3 minutes in one process.
#
# The exit status is 0 when every collected test passed and the only collection errors
# are modules that need a package missing there, 1 for any other failure or error, and
# 124 when the tests ran past TEST_SECONDS.
#
# Usage: bash scripts/gpu_check.sh [RUN_FOLDER] [options of python -m experiments.throughput]
set -uo pipefail

caller="$(pwd)"
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
if [ -n "${OUT:-}" ]; then default="$OUT/gpu_check"; else default="runs/gpu_check-$stamp"; fi
out="${1:-$default}"
shift || true
# A relative RUN_FOLDER names a folder under the caller's working directory.
if [ "$out" != "$default" ]; then
    case "$out" in /*) ;; *) out="$caller/$out" ;; esac
fi

"$PYTHON" - <<'PY' || exit 2
import jax

print("JAX", jax.__version__, "devices:", jax.devices())
if jax.default_backend() != "gpu":
    raise SystemExit("no GPU backend: install the cuda extra (jax[cuda13]) or run on a GPU machine")
PY

mkdir -p "$out"

# Each xdist worker is a JAX process. Without this, each would reserve 75 % of the GPU's
# memory when it starts (JAX's default), and the second one would run out.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1

timeout "${TEST_SECONDS:-300}" "$PYTHON" -m pytest tests -q -p no:cacheprovider \
    -m "not slow" --continue-on-collection-errors -n "${WORKERS:-8}" \
    --junitxml "$out/junit.xml" 2>&1 | tee "$out/tests.log"
tests_status=${PIPESTATUS[0]}
if [ "$tests_status" -ne 124 ] && [ -f "$out/junit.xml" ]; then
    # pytest exits 1 for any collection error, so the report decides which ones count.
    "$PYTHON" - "$out/junit.xml" <<'PY' 2>&1 | tee -a "$out/tests.log"
import re
import sys
import xml.etree.ElementTree as ElementTree

MISSING = re.compile(r"No module named '(brax|mujoco|gymnax|tensorboardX|tyro|cvxpy|clarabel|wandb)")
skipped, failed = [], []
for case in ElementTree.parse(sys.argv[1]).iter("testcase"):
    for problem in list(case.findall("failure")) + list(case.findall("error")):
        name = f"{case.get('classname')}.{case.get('name')}".strip(".")
        text = (problem.get("message") or "") + (problem.text or "")
        if problem.get("message") == "collection failure" and MISSING.search(text):
            skipped.append(f"{name} ({MISSING.search(text).group(1)} is missing)")
        else:
            failed.append(name)
for name in skipped:
    print("not collected:", name)
for name in failed:
    print("FAILED:", name)
print(f"{len(failed)} failed or errored; {len(skipped)} modules not collected")
sys.exit(1 if failed else 0)
PY
    tests_status=${PIPESTATUS[0]}
fi
echo "tests exit status: $tests_status" | tee -a "$out/tests.log"

timeout "${BENCH_SECONDS:-180}" bash scripts/gpu_bench.sh "$out/bench" "$@" 2>&1 \
    | tee "$out/bench.log"
echo "benchmark exit status: ${PIPESTATUS[0]}" | tee -a "$out/bench.log"
exit "$tests_status"
