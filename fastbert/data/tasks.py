"""The units of work of data preparation's two passes, run in worker processes or in-process.

Pass 1, :meth:`Worker.encode`: a chunk of document texts -> sentences -> token ids.
Pass 2, :meth:`Worker.pair`: a range of one split's documents -> NSP pairs, materialized.
Each document's pairs come from ``default_rng([seed, dupe, document])`` (its index in the
token store), so neither chunking nor the worker count changes the output.

A worker tokenizes on one thread: the processes are the parallelism (tokenizers' own pool
would oversubscribe the cores), so ``--workers N`` means N cores.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers

from .nsp import document_pairs
from .settings import PrepareSettings
from .shards import PairChunk
from .sources import CorpusFormat, split_sentences
from .store import TokenStore


@dataclass(frozen=True)
class EncodedChunk:
    """Pass 1's result for a chunk of documents (documents without any token are dropped)."""

    tokens: np.ndarray
    sentence_lengths: np.ndarray  # int64, one per non-empty sentence
    document_sentences: np.ndarray  # int64, one per kept document: its non-empty sentences
    sentences: int  # sentences found, empty ones included
    truncated_sentences: int  # cut to the pair length


@dataclass(frozen=True)
class WorkerSetup:
    tokenizer_json: str
    corpus_format: CorpusFormat
    settings: PrepareSettings
    token_dtype: str
    store_dir: Path


class Worker:
    def __init__(self, setup: WorkerSetup):
        self.setup = setup
        self.tokenizer = tokenizers.Tokenizer.from_str(setup.tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.token_dtype = np.dtype(setup.token_dtype)
        self._store: TokenStore | None = None

    def encode(self, documents: list[str]) -> EncodedChunk:
        per_document = [split_sentences(text, self.setup.corpus_format) for text in documents]
        sentences = list(itertools.chain.from_iterable(per_document))
        # encode_batch_fast skips character offsets, which nothing here needs.
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch_fast(sentences, add_special_tokens=False)]
        max_tokens = self.setup.settings.max_num_tokens
        full_lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        tokens = np.fromiter(itertools.chain.from_iterable(ids), self.token_dtype, int(full_lengths.sum()))
        lengths = np.minimum(full_lengths, max_tokens)
        if full_lengths.max(initial=0) > max_tokens:  # keep each sentence's first max_tokens
            starts = np.repeat(np.cumsum(full_lengths) - full_lengths, full_lengths)
            tokens = tokens[np.arange(len(tokens)) - starts < max_tokens]
        sentence_counts = np.fromiter(map(len, per_document), np.int64, len(per_document))
        nonempty = lengths > 0
        document_of_sentence = np.repeat(np.arange(len(per_document)), sentence_counts)
        kept_per_document = np.bincount(document_of_sentence[nonempty], minlength=len(per_document))
        return EncodedChunk(tokens, lengths[nonempty], kept_per_document[kept_per_document > 0],
                            len(sentences), int((full_lengths > max_tokens).sum()))

    def pair(self, split: str, dupe: int, start: int, stop: int) -> PairChunk:
        """The pairs of the split's documents start..stop-1 in order."""
        settings = self.setup.settings
        corpus = self.store.corpus(split)
        bounds, random_next = [], []
        for document in range(start, stop):
            rng = np.random.default_rng([settings.seed, dupe, int(corpus.documents[document])])
            for pair in document_pairs(corpus, document, settings.max_num_tokens, settings.short_seq_prob, rng):
                bounds.append(pair[:4])
                random_next.append(pair.is_random_next)
        bounds = np.array(bounds, dtype=np.int64).reshape(-1, 4)
        a_lengths = bounds[:, 1] - bounds[:, 0]
        return PairChunk(_read_segments(corpus.tokens, bounds), a_lengths + bounds[:, 3] - bounds[:, 2],
                         a_lengths.astype(np.int32), np.array(random_next, dtype=np.uint8))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> TokenStore:
        if self._store is None:  # opened on first use: it is complete only once pass 1 is over
            self._store = TokenStore(self.setup.store_dir, self.token_dtype)
        return self._store


def _read_segments(tokens, bounds: np.ndarray) -> np.ndarray:
    """Every pair's A then B, back to back: one read where B follows A in the store, else two."""
    pieces = []
    for a_start, a_end, b_start, b_end in bounds.tolist():
        if b_start == a_end:
            pieces.append(tokens[a_start:b_end])
        else:
            pieces += (tokens[a_start:a_end], tokens[b_start:b_end])
    return np.concatenate(pieces) if pieces else np.zeros(0, tokens.dtype)


_worker: Worker | None = None


def start_worker_process(setup: WorkerSetup) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker = Worker(setup)


def encode_in_worker(documents: list[str]) -> EncodedChunk:
    return _worker.encode(documents)


def pair_in_worker(split: str, dupe: int, start: int, stop: int) -> PairChunk:
    return _worker.pair(split, dupe, start, stop)
