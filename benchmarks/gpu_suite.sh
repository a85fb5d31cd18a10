#!/usr/bin/env bash
# The GPU benchmark suite in one call (its limits add up to about 6.5 minutes):
#   benchmarks/gpu_suite.sh [OUT_DIR]        (default benchmarks/results/<date>-gpu)
# Sections: `fastbert bench --suite gpu` (measured ceilings: copy GB/s and bf16 matmul
# FLOP/s; pretraining steps of BERT-base s128 at batch 32, 128 and 256 and of BERT-large on
# real pairs packed into 16 rows of 512 tokens (shards from benchmarks/gpu_data.sh, carried
# along), each as fastbert, fastbert on CUDA graphs, fastbert's torch ops and transformers
# sdpa, plus torch.compile of fastbert's torch ops and of transformers at batch 128; attention
# backends; the CoLA-shaped fine-tuning step), then the fused kernels (bench_kernels.py).
# A failing section is reported and the others still run. Printed last: the summary table
# (samples/s, real tokens/s, MFU against the measured matmul rate, peak memory, speedups),
# the kernels, and the op counts per training step (counted on a CPU, deterministic: the
# newest committed benchmarks/results/*-step-ops.md). Works without deepspeed and flash-attn.
# tests/train/test_gpu_suite_dry_run.py runs every training-step case on the CPU, shrunk.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
"$PYTHON" - <<'PY' || echo "!!! environment check failed"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
PY

section() {  # section NAME SECONDS COMMAND...: run with a time limit; report failure, never abort
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    timeout "$limit" "$@"
    local rc=$?
    [[ $rc -eq 0 ]] || echo "!!! section $name failed (exit $rc$([[ $rc -eq 124 ]] && echo ', timed out'))"
}

# The history plot covers earlier saved runs plus this one.
[[ -f benchmarks/results/history.jsonl ]] && cp benchmarks/results/history.jsonl "$OUT/history.jsonl"
# Training steps first (the headline), then the kernels, then the report once more so it
# includes the kernel table and its summary is the last thing printed.
[[ -f benchmarks/.data/wiki-s512/metadata.json ]] || echo "!!! no benchmarks/.data/wiki-s512: the packed case will skip (run benchmarks/gpu_data.sh where ../shared is)"
section suites 280 "$PYTHON" -m fastbert.bench --suite gpu --out "$OUT" --history "$OUT/history.jsonl" --time-budget 260
# Against torch eager only: compiling a baseline per op would not fit the minute.
section kernels 60 bash -c '"$0" benchmarks/bench_kernels.py --out "$1" --reps 30 --warmup 5 --no-compile >"$1/bench_kernels.log" 2>&1' \
    "$PYTHON" "$OUT"
tail -n 2 "$OUT/bench_kernels.log" 2>/dev/null
step_ops=$(ls benchmarks/results/*-step-ops.md 2>/dev/null | sort | tail -n 1)
[[ -n "$step_ops" ]] && cp "$step_ops" "$OUT/step_ops.md"  # the summary prints it after the kernels
echo "=== summary"
if [[ -f "$OUT/bench-gpu.json" ]]; then
    "$PYTHON" -m fastbert.bench --from-json "$OUT/bench-gpu.json" --out "$OUT" --history "$OUT/history.jsonl"
else
    echo "!!! no suite results in $OUT"
fi
