"""Shared fixtures for the data tests: a real corpus slice, a tokenizer trained on it, prepared shards."""

from pathlib import Path

import pytest

from fastbert.data.corpus import read_documents
from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
from fastbert.tokenizer import train_tokenizer

CORPUS_DOCUMENTS = 40  # of wiki_16.txt: about 3,300 sentences, enough for statistics, quick to tokenize


@pytest.fixture(scope="session")
def corpus_file(shared_data: Path, tmp_path_factory) -> Path:
    documents = read_documents([shared_data / "corpus" / "wiki_16.txt"])[:CORPUS_DOCUMENTS]
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text("".join("\n".join(document) + "\n\n" for document in documents), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(corpus_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer") / "wordpiece"
    train_tokenizer([corpus_file], vocab_size=3000, lowercase=True, out_dir=out)
    return out


@pytest.fixture(scope="session")
def prepared_settings() -> PrepareSettings:
    return PrepareSettings(max_seq_len=128, seed=7)


@pytest.fixture(scope="session")
def prepared_dir(corpus_file: Path, tokenizer_dir: Path, prepared_settings: PrepareSettings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "shards"
    prepare_pretraining_data([str(corpus_file)], tokenizer_dir, out, prepared_settings)
    return out
