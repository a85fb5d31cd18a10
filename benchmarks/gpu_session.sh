#!/usr/bin/env bash
# Everything a short GPU loan should run, in one call (limits add up to about 7.5 minutes):
#   bash benchmarks/gpu_data.sh                 (here, first: the packed case's real shards)
#   benchmarks/gpu_session.sh [OUT_DIR]         (on the device, carrying benchmarks/.data)
# 1. the CUDA correctness checks (`pytest -m gpu tests`: kernels against fp64, bitwise
#    repeats, atomic gradient sums, dropout replay, model parity, CUDA-graph training (update
#    inside the graph, AdamW and LAMB, non-finite skip) against eager) -> OUT/gpu_tests.log
# 2. the benchmark suite (benchmarks/gpu_suite.sh), whose summary table is printed last.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
echo "=== gpu tests (limit 110s)"
timeout 110 "$PYTHON" -m pytest -q -m gpu tests -p no:cacheprovider >"$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $? ($(tail -n 1 "$OUT/gpu_tests.log"))"
grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.log" | head -n 20
bash benchmarks/gpu_suite.sh "$OUT"
