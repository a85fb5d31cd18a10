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
        encodings = self.tokenizer.encode_batch_fast(sentences, add_special_tokens=False)
        max_tokens = self.setup.settings.max_num_tokens
        full_lengths = np.fromiter((len(encoding.ids) for encoding in encodings), np.int64, len(encodings))
        lengths = np.minimum(full_lengths, max_tokens)
        tokens = np.fromiter(itertools.chain.from_iterable(encoding.ids[:max_tokens] for encoding in encodings),
                             self.token_dtype, int(lengths.sum()))
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
        tokens = corpus.tokens
        segments = [tokens[begin:end] for row in bounds.tolist() for begin, end in ((row[0], row[1]), (row[2], row[3]))]
        a_lengths = bounds[:, 1] - bounds[:, 0]
        chunk = PairChunk(np.concatenate(segments), a_lengths + bounds[:, 3] - bounds[:, 2],
                          a_lengths.astype(np.int32), np.array(random_next, dtype=np.uint8))
        self.store.release_pages()
        return chunk

    @property
    def store(self) -> TokenStore:
        if self._store is None:  # opened on first use: it is complete only once pass 1 is over
            self._store = TokenStore(self.setup.store_dir, self.token_dtype)
        return self._store


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
