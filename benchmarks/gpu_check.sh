#!/usr/bin/env bash
# benchmarks/gpu_check.sh -- the one prepared device check (issue 15): everything that needs a GPU,
# in one short run, with its results written as files.
#
#   bash benchmarks/gpu_check.sh            # OUT=... to choose the output folder
#
# Stages (each a log, a JUnit XML where it is pytest, and one JSON line in summary.jsonl):
#   env            nvidia-smi, nvcc, CuPy and its device (env.json)
#   cuda-kernel    tests/test_cuda_kernel.py (host harness, nvcc/ptxas registers, GPU vs harness)
#   gpu            tests/test_gpu.py (CuPy array path and each model's fused kernel vs NumPy)
#   gpu-marked     pytest -m gpu over the other test files (every other test marked gpu)
#   precision      tests/test_precision.py
#   batch          tests/test_batch_invariance.py
#   evaluator      tests/test_evaluator.py
#   w1             benchmarks/gpu_w1.py, short: rWW float32/float64, Hopf, LaNMM (w1.jsonl)
# Without a CUDA device (no CuPy, or no device) only the stages that mean something on a CPU run
# (env, gpu-marked: its tests skip, cuda-kernel: the host harness, w1: one "skipped" line) and the
# script exits 0; GPU_CHECK_STAGES="..." picks stages explicitly. The whole run is held to
# GPU_CHECK_BUDGET_S seconds (default 450, well under the 9 minutes a device call may take): each
# stage gets at most its own limit and what is left of the budget, under `timeout`.
# Exit status: 0 when every stage that ran passed, else 1.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT_DIR="${OUT:-results/gpu-check}"
mkdir -p "$OUT_DIR"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
START=$(date +%s)
SUMMARY="$OUT_DIR/summary.jsonl"
: > "$SUMMARY"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
# compiled kernels (numba, the host harness) outside OUT: they are build products, not results
export RAYBRAIN_CACHE_DIR="${RAYBRAIN_CACHE_DIR:-${TMPDIR:-/tmp}/raybrain-gpu-check-cache}"
FAILED=0

remaining() {
    echo $((BUDGET - ($(date +%s) - START)))
}

# run_stage NAME LIMIT_S COMMAND...: run COMMAND under timeout, its output in NAME.log
run_stage() {
    local name=$1 limit=$2 left t0 rc
    shift 2
    left=$(remaining)
    if [ "$left" -lt 15 ]; then
        printf '{"stage": "%s", "status": "not run", "reason": "time budget spent"}\n' "$name" >> "$SUMMARY"
        FAILED=1
        return
    fi
    if [ "$limit" -gt "$left" ]; then
        limit=$left
    fi
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    printf '{"stage": "%s", "rc": %d, "wall_s": %d, "limit_s": %d, "log": "%s.log"}\n' \
        "$name" "$rc" "$(($(date +%s) - t0))" "$limit" "$name" >> "$SUMMARY"
    echo "== $name: rc $rc ($(($(date +%s) - t0)) s)"
    tail -n 3 "$OUT_DIR/$name.log"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
    fi
}

pytest_stage() {  # pytest_stage NAME LIMIT_S ARGS...
    local name=$1 limit=$2
    shift 2
    run_stage "$name" "$limit" "$PY" -m pytest -q -rsxP -p no:cacheprovider --junitxml="$OUT_DIR/$name.xml" "$@"
}

# -- the machine -------------------------------------------------------------------------------
GPU_REASON=$("$PY" - <<'EOF' 2>&1
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    print("" if n > 0 else "CuPy sees no CUDA device")
except Exception as e:
    print(f"no CuPy/CUDA device: {type(e).__name__}: {e}".replace('"', "'"))
EOF
)
GPU_REASON=$(echo "$GPU_REASON" | tail -n 1)
"$PY" - > "$OUT_DIR/env.json" 2>&1 <<'EOF'
import json, platform, shutil, subprocess
env = {"python": platform.python_version(), "machine": platform.machine()}
for tool, args in (("nvidia-smi", ["-L"]), ("nvcc", ["--version"])):
    path = shutil.which(tool)
    env[tool] = subprocess.run([path, *args], capture_output=True, text=True).stdout.strip() if path else None
try:
    import cupy
    env["cupy"] = cupy.__version__
    p = cupy.cuda.runtime.getDeviceProperties(0)
    env["device"] = p["name"].decode()
    env["compute_capability"] = f"{p['major']}.{p['minor']}"
    env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
except Exception as e:
    env["cupy_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(env))
EOF
if [ -z "$GPU_REASON" ]; then
    GPU=1
    DEFAULT_STAGES="cuda-kernel gpu gpu-marked w1 precision batch evaluator"
else
    GPU=0
    DEFAULT_STAGES="cuda-kernel gpu-marked w1"
fi
STAGES="${GPU_CHECK_STAGES:-$DEFAULT_STAGES}"
printf '{"gpu": %s, "reason": "%s", "stages": "%s", "budget_s": %d}\n' \
    "$([ "$GPU" = 1 ] && echo true || echo false)" "$GPU_REASON" "$STAGES" "$BUDGET" >> "$SUMMARY"
echo "== gpu: $GPU ${GPU_REASON:+($GPU_REASON)}; stages: $STAGES"

# -- the stages ------------------------------------------------------------------------------
for stage in $STAGES; do
    case "$stage" in
        gpu-marked)  # the files of the other stages run whole there
            pytest_stage gpu-marked 150 -m gpu tests --ignore=tests/test_cuda_kernel.py --ignore=tests/test_gpu.py \
                --ignore=tests/test_precision.py --ignore=tests/test_batch_invariance.py \
                --ignore=tests/test_evaluator.py ;;
        cuda-kernel) pytest_stage cuda-kernel 180 tests/test_cuda_kernel.py ;;
        gpu) pytest_stage gpu 90 tests/test_gpu.py ;;
        precision) pytest_stage precision 150 tests/test_precision.py ;;
        batch) pytest_stage batch 150 tests/test_batch_invariance.py ;;
        evaluator) pytest_stage evaluator 150 tests/test_evaluator.py ;;
        w1)
            W1="$OUT_DIR/w1.jsonl"
            : > "$W1"
            # shellcheck disable=SC2016  # $0 and $1 are the inner shell's: the Python and the output
            run_stage w1 120 bash -c '
                set -e
                "$0" benchmarks/gpu_w1.py --batch 1 128 4096 --sim-s 2 --dtype float32 >> "$1"
                "$0" benchmarks/gpu_w1.py --batch 1024 --sim-s 1 --dtype float64 >> "$1"
                "$0" benchmarks/gpu_w1.py --model hopf --batch 1024 --sim-s 2 >> "$1"
                "$0" benchmarks/gpu_w1.py --model lanmm --batch 1024 --sim-s 1 >> "$1"
            ' "$PY" "$W1"
            ;;
        *)
            printf '{"stage": "%s", "status": "unknown stage"}\n' "$stage" >> "$SUMMARY"
            FAILED=1
            ;;
    esac
done

printf '{"done": true, "failed": %s, "wall_s": %d}\n' "$([ "$FAILED" = 1 ] && echo true || echo false)" \
    "$(($(date +%s) - START))" >> "$SUMMARY"
echo "== summary: $SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
