"""``fastbert data prepare``: corpus text -> tokenized NSP pairs in memory-mapped shards.

Steps: read and validate every corpus file, tokenize each document's sentences in one
batch (over ``--workers`` processes), build NSP pairs per document with a generator
seeded by ``(seed, dupe, document index)`` so the output does not depend on the worker
count, then write the shards (see :mod:`fastbert.data.dataset`) into a temporary
directory beside ``--out`` and rename it: an output directory that exists is complete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import tokenizers
from tqdm import tqdm

from ..atomic import reporting_full_disk, staging_directory
from ..errors import InputError, UserError
from ..tokenizer import WordPieceTokenizer, load_tokenizer, tokenizer_hash
from .corpus import Document, expand_corpus_paths, read_documents
from .dataset import FORMAT, FORMAT_VERSION, METADATA_FILE
from .nsp import Pair, TokenizedCorpus, document_pairs

SPECIAL_TOKENS_PER_PAIR = 3  # [CLS] A [SEP] B [SEP]


@dataclass(frozen=True)
class PrepareSettings:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    seed: int = 12345

    def validate(self) -> None:
        if self.max_seq_len < SPECIAL_TOKENS_PER_PAIR + 2:
            raise UserError(f"--max-seq-len must be at least {SPECIAL_TOKENS_PER_PAIR + 2}, got {self.max_seq_len}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise UserError(f"--short-seq-prob must lie in [0, 1], got {self.short_seq_prob}")
        if self.dupe_factor < 1:
            raise UserError(f"--dupe-factor must be at least 1, got {self.dupe_factor}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, got {self.seed}")

    @property
    def max_num_tokens(self) -> int:
        return self.max_seq_len - SPECIAL_TOKENS_PER_PAIR


def register(data_subparsers: argparse._SubParsersAction) -> None:
    defaults = PrepareSettings()
    parser = data_subparsers.add_parser("prepare", help="tokenize a corpus into NSP/MLM pretraining shards")
    parser.add_argument("--corpus", nargs="+", required=True, metavar="FILE_OR_GLOB",
                        help="text files: one sentence per line, a blank line between documents")
    parser.add_argument("--tokenizer", required=True, type=Path, metavar="DIR", help="BERT tokenizer directory")
    parser.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len,
                        help="tokens per pair, special tokens included")
    parser.add_argument("--short-seq-prob", type=float, default=defaults.short_seq_prob,
                        help="probability of a shorter random target length")
    parser.add_argument("--dupe-factor", type=int, default=defaults.dupe_factor,
                        help="passes over the corpus with different pair splits (masking is dynamic, so 1 is usual)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=1,
                        help="tokenizer processes; 1 tokenizes in-process on tokenizers' own threads "
                        "(the output does not depend on it)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (must not exist)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = PrepareSettings(args.max_seq_len, args.short_seq_prob, args.dupe_factor, args.seed)
    started = time.perf_counter()
    metadata = prepare_pretraining_data(args.corpus, args.tokenizer, args.out, settings, workers=args.workers)
    elapsed = time.perf_counter() - started
    counts = metadata["counts"]
    print(
        f"wrote {args.out}: {counts['pairs']} pairs ({counts['is_next_fraction']:.1%} IsNext) from "
        f"{counts['documents']} documents, {counts['sentences']} sentences "
        f"({counts['truncated_sentences']} over-long sentences truncated) in {elapsed:.1f} s, "
        f"{counts['sentences'] / elapsed:,.0f} sentences/s"
    )
    return 0


def prepare_pretraining_data(
    corpus: list[str], tokenizer_dir: str | Path, out_dir: str | Path, settings: PrepareSettings, workers: int = 1
) -> dict:
    """Write the shards into out_dir (which must not exist) and return their metadata."""
    settings.validate()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new --out directory")
    tokenizer = load_tokenizer(tokenizer_dir)
    paths = expand_corpus_paths(corpus)
    documents = read_documents(paths)
    if len(documents) < 2:
        raise InputError(paths[0], "the corpus holds a single document; next-sentence pairs need at least two "
                         "(separate documents with a blank line)")

    token_dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    encoded = _encode_corpus(documents, tokenizer.backend.to_str(), settings.max_num_tokens, token_dtype, workers)
    if encoded.corpus.num_documents < 2:
        raise InputError(paths[0], "fewer than two documents have any tokens; next-sentence pairs are impossible")
    pairs = [
        pair
        for dupe in range(settings.dupe_factor)
        for document in range(encoded.corpus.num_documents)
        for pair in document_pairs(
            encoded.corpus, document, settings.max_num_tokens, settings.short_seq_prob,
            np.random.default_rng([settings.seed, dupe, document]),
        )
    ]
    arrays = _pair_arrays(encoded.corpus.tokens, pairs)
    metadata = _metadata(paths, tokenizer_dir, tokenizer, settings, encoded, arrays, out)
    with reporting_full_disk(out.parent, f"the prepared data {out.name}", needed=sum(a.nbytes for a in arrays.values()),
                             outcome="nothing was written"):
        _write_atomically(out, arrays, metadata)
    return metadata


@dataclass(frozen=True)
class EncodedCorpus:
    corpus: TokenizedCorpus
    truncated_sentences: int
    empty_sentences: int


class _DocumentEncoder:
    """Tokenizes one document's sentences in a batch; over-long sentences are cut to max_tokens."""

    def __init__(self, tokenizer_json: str, max_tokens: int, dtype: type):
        self.tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_tokens = max_tokens
        self.dtype = dtype
        # encode_batch_fast (tokenizers >= 0.20.1) skips character offsets, which nothing here needs.
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def __call__(self, sentences: Document) -> tuple[np.ndarray, np.ndarray, int]:
        """(token ids, per-sentence lengths with empty sentences dropped, truncated sentence count)."""
        encodings = self._encode_batch(sentences, add_special_tokens=False)
        full_lengths = np.fromiter((len(encoding.ids) for encoding in encodings), np.int64, len(encodings))
        ids = [encoding.ids[: self.max_tokens] for encoding in encodings]
        lengths = np.minimum(full_lengths, self.max_tokens)
        tokens = np.fromiter(itertools.chain.from_iterable(ids), self.dtype, int(lengths.sum()))
        return tokens, lengths[lengths > 0], int((full_lengths > self.max_tokens).sum())


_worker_encoder: _DocumentEncoder | None = None


def _start_worker(tokenizer_json: str, max_tokens: int, dtype: type) -> None:
    global _worker_encoder
    # One thread per worker process: the processes are the parallelism, tokenizers' own pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_encoder = _DocumentEncoder(tokenizer_json, max_tokens, dtype)


def _encode_in_worker(sentences: Document) -> tuple[np.ndarray, np.ndarray, int]:
    return _worker_encoder(sentences)


def _encode_corpus(
    documents: list[Document], tokenizer_json: str, max_tokens: int, dtype: type, workers: int
) -> EncodedCorpus:
    progress = tqdm(total=sum(map(len, documents)), unit="sent", desc="tokenize", disable=None)
    with progress:
        if workers == 1:
            results = map(_DocumentEncoder(tokenizer_json, max_tokens, dtype), documents)
            token_parts, sentence_lengths, truncated = _collect(results, documents, progress)
        else:
            # spawn: workers must not inherit the parent's threads (tokenizers' pool, torch's OpenMP).
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, _start_worker, (tokenizer_json, max_tokens, dtype)) as pool:
                results = pool.imap(_encode_in_worker, documents, chunksize=4)
                token_parts, sentence_lengths, truncated = _collect(results, documents, progress)
    nonempty = [lengths for lengths in sentence_lengths if len(lengths)]
    all_lengths = np.concatenate(nonempty) if nonempty else np.zeros(0, np.int64)
    corpus = TokenizedCorpus(
        tokens=np.concatenate(token_parts),
        sentence_offsets=np.concatenate([[0], np.cumsum(all_lengths)]).astype(np.int64),
        document_offsets=np.concatenate([[0], np.cumsum([len(lengths) for lengths in nonempty])]).astype(np.int64),
    )
    return EncodedCorpus(corpus, truncated, sum(map(len, documents)) - corpus.num_sentences)


def _collect(
    results: Iterable[tuple[np.ndarray, np.ndarray, int]], documents: list[Document], progress: tqdm
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    token_parts, sentence_lengths, truncated = [], [], 0
    for document, (tokens, lengths, document_truncated) in zip(documents, results):
        token_parts.append(tokens)
        sentence_lengths.append(lengths)
        truncated += document_truncated
        progress.update(len(document))
    return token_parts, sentence_lengths, truncated


def _pair_arrays(tokens: np.ndarray, pairs: list[Pair]) -> dict[str, np.ndarray]:
    bounds = np.array([pair[:4] for pair in pairs], dtype=np.int64).reshape(-1, 4)
    a_lengths = bounds[:, 1] - bounds[:, 0]
    b_lengths = bounds[:, 3] - bounds[:, 2]
    segments = [tokens[start:end] for a_start, a_end, b_start, b_end in bounds.tolist()
                for start, end in ((a_start, a_end), (b_start, b_end))]
    return {
        "tokens": np.concatenate(segments),
        "offsets": np.concatenate([[0], np.cumsum(a_lengths + b_lengths)]).astype(np.int64),
        "a_lengths": a_lengths.astype(np.int32),
        "is_random_next": np.array([pair.is_random_next for pair in pairs], dtype=np.uint8),
    }


def _metadata(
    paths: list[Path],
    tokenizer_dir: str | Path,
    tokenizer: WordPieceTokenizer,
    settings: PrepareSettings,
    encoded: EncodedCorpus,
    arrays: dict[str, np.ndarray],
    out: Path,
) -> dict:
    pairs = len(arrays["a_lengths"])
    command = ["fastbert", "data", "prepare", "--corpus", *map(str, paths), "--tokenizer", str(tokenizer_dir),
               "--max-seq-len", str(settings.max_seq_len), "--short-seq-prob", str(settings.short_seq_prob),
               "--dupe-factor", str(settings.dupe_factor), "--seed", str(settings.seed), "--out", str(out)]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "max_seq_len": settings.max_seq_len,
        "short_seq_prob": settings.short_seq_prob,
        "dupe_factor": settings.dupe_factor,
        "seed": settings.seed,
        "token_dtype": arrays["tokens"].dtype.name,
        "tokenizer": {
            "path": str(Path(tokenizer_dir).resolve()),  # training finds the vocabulary here, from any directory
            "hash": tokenizer_hash(tokenizer),
            "vocab_size": tokenizer.vocab_size,
            "lowercase": tokenizer.lowercase,
            "pad_id": tokenizer.pad_id,
            "unk_id": tokenizer.unk_id,
            "cls_id": tokenizer.cls_id,
            "sep_id": tokenizer.sep_id,
            "mask_id": tokenizer.mask_id,
        },
        "counts": {
            "documents": encoded.corpus.num_documents,
            "sentences": encoded.corpus.num_sentences,
            "empty_sentences": encoded.empty_sentences,
            "truncated_sentences": encoded.truncated_sentences,
            "corpus_tokens": len(encoded.corpus.tokens),
            "pairs": pairs,
            "is_next_fraction": round(1.0 - float(arrays["is_random_next"].mean()), 6),
            "pair_tokens": len(arrays["tokens"]) + SPECIAL_TOKENS_PER_PAIR * pairs,
        },
        "command": shlex.join(command),
        "versions": {
            "fastbert": _installed_version("fastbert"),
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _installed_version(distribution: str) -> str:
    try:
        return package_metadata.version(distribution)
    except package_metadata.PackageNotFoundError:
        return "not installed"


def _write_atomically(out: Path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    with staging_directory(out) as staging:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
