"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pretrain_data import wikipedia_pretraining_data


@pytest.fixture(scope="session")
def tiny_pretraining_data(shared_data, tmp_path_factory) -> Path:
    """32-token NSP/MLM pairs from the first 100 kB of one Wikipedia file, with a 2000-word tokenizer."""
    root = tmp_path_factory.mktemp("tiny-pretraining")
    return wikipedia_pretraining_data(shared_data, root, chars=100_000, vocab_size=2000, max_seq_len=32)


@pytest.fixture(scope="session")
def tiny_held_out_data(shared_data, tiny_pretraining_data) -> Path:
    """Held-out pairs for :func:`tiny_pretraining_data`: the next 40 kB of documents, same tokenizer."""
    from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data

    root = tiny_pretraining_data.parent
    text = (shared_data / "corpus" / "wiki_00.txt").read_text(encoding="utf-8")
    start = text.index("\n\n", 100_000) + 2
    corpus = root / "held_out.txt"
    corpus.write_text(text[start: text.index("\n\n", start + 40_000) + 2], encoding="utf-8")
    prepare_pretraining_data([str(corpus)], root / "tokenizer", root / "held_out", PrepareSettings(max_seq_len=32))
    return root / "held_out"
