"""A small pretraining data set made on the spot (no shared data needed): for tests of the command line."""

from __future__ import annotations

import random
from pathlib import Path


def make_pretraining_data(root: Path, documents: int = 40, seed: int = 0) -> Path:
    """Tokenizer and 64-token NSP/MLM shards from documents of made-up words; returns the data directory."""
    from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
    from fastbert.tokenizer import train_tokenizer

    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "va", "de", "gu", "sha"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    text = "\n\n".join(
        "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + "." for _ in range(rng.randint(6, 12)))
        for _ in range(documents)
    )
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus.txt"
    corpus.write_text(text + "\n", encoding="utf-8")
    train_tokenizer([corpus], vocab_size=400, lowercase=True, out_dir=root / "tokenizer")
    prepare_pretraining_data([str(corpus)], root / "tokenizer", root / "data", PrepareSettings(max_seq_len=64))
    return root / "data"


def wikipedia_pretraining_data(shared_data: Path, root: Path, *, chars: int, vocab_size: int, max_seq_len: int) -> Path:
    """Tokenizer and NSP/MLM shards from the first ``chars`` characters (whole documents) of one
    shared Wikipedia file; returns the data directory."""
    from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data
    from fastbert.tokenizer import train_tokenizer

    text = (shared_data / "corpus" / "wiki_00.txt").read_text(encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text(text[: text.index("\n\n", chars) + 2], encoding="utf-8")
    train_tokenizer([corpus], vocab_size=vocab_size, lowercase=True, out_dir=root / "tokenizer")
    prepare_pretraining_data([str(corpus)], root / "tokenizer", root / "data", PrepareSettings(max_seq_len=max_seq_len))
    return root / "data"
