"""Fixtures of the fine-tuning tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    """The MiniLM checkpoint's WordPiece tokenizer (with its saved padding and truncation)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
