#!/usr/bin/env bash
# The GPU benchmark suite in one call, under 6 minutes on one H100:
#   benchmarks/gpu_suite.sh [OUT_DIR]        (default benchmarks/results/<date>-gpu)
# Sections: `fastbert bench --suite gpu` (measured ceilings: copy GB/s and bf16 matmul
# FLOP/s; pretraining steps BERT-base s128 at batch 32 and 128, BERT-base and -large s512,
# each as fastbert, fastbert on CUDA graphs, fastbert's torch ops, torch.compile of those
# (base b32 only) and transformers; attention backends; the CoLA-shaped fine-tuning
# step), then the fused kernels
# (bench_kernels.py). A failing section is reported and the others still run; the
# summary table is printed last. Works without deepspeed and flash-attn.
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
section suites 250 "$PYTHON" -m fastbert.bench --suite gpu --out "$OUT" --history "$OUT/history.jsonl" --time-budget 225
section kernels 100 bash -c '"$0" benchmarks/bench_kernels.py --out "$1" --reps 30 --warmup 5 >"$1/bench_kernels.log" 2>&1' \
    "$PYTHON" "$OUT"
tail -n 2 "$OUT/bench_kernels.log" 2>/dev/null
echo "=== summary"
if [[ -f "$OUT/bench-gpu.json" ]]; then
    "$PYTHON" -m fastbert.bench --from-json "$OUT/bench-gpu.json" --out "$OUT" --history "$OUT/history.jsonl"
else
    echo "!!! no suite results in $OUT"
fi
