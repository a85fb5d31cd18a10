"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_pretraining_data(shared_data, tmp_path_factory) -> Path:
    """32-token NSP/MLM pairs from the first 100 kB of one Wikipedia file, with a 2000-word tokenizer."""
    from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
    from fastbert.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny-pretraining")
    text = (shared_data / "corpus" / "wiki_00.txt").read_text(encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text(text[: text.index("\n\n", 100_000) + 2], encoding="utf-8")
    train_tokenizer([corpus], vocab_size=2000, lowercase=True, out_dir=root / "tokenizer")
    prepare_pretraining_data([str(corpus)], root / "tokenizer", root / "data", PrepareSettings(max_seq_len=32))
    return root / "data"
