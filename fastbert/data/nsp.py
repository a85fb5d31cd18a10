"""Next-sentence-prediction pairs, built the way BERT's create_pretraining_data does.

Per document: pick a target length (``max_num_tokens``, or with probability
``short_seq_prob`` a shorter random one), gather sentences into a chunk until it reaches
the target, split the chunk at a random sentence boundary into A and B. Half of the
time (always when the chunk is a single sentence) B is replaced by a span of another
document and the unused sentences are put back for the next chunk. Finally the longer
side loses a token at a random end until the pair fits.

A pair is four offsets into the corpus's flat token array, so no token is read here. The
sentence offsets are only ever sliced (one slice per document), so they may be a
:class:`~fastbert.data.store.FileArray` on disk: pairing reads only the documents it uses.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class TokenizedCorpus:
    """Sentences' token ids back to back, grouped into documents, seen through one split's documents.

    A held-out split and the training split share the arrays but not their ``documents``, so
    a random-next segment always comes from a document of the same split.
    """

    tokens: np.ndarray  # or a FileArray: read by slices only
    sentence_offsets: np.ndarray  # int64 [num_sentences + 1] into tokens; or a FileArray
    document_offsets: np.ndarray  # int64 [num_all_documents + 1] into sentences
    documents: np.ndarray  # int64 [num_documents]: this split's documents, indices into document_offsets

    @classmethod
    def whole(cls, tokens: np.ndarray, sentence_offsets: np.ndarray, document_offsets: np.ndarray) -> TokenizedCorpus:
        """Every document, in order."""
        return cls(tokens, sentence_offsets, document_offsets, np.arange(len(document_offsets) - 1, dtype=np.int64))

    @property
    def num_documents(self) -> int:
        return len(self.documents)

    def sentence_range(self, document: int) -> tuple[int, int]:
        """(first sentence, one past the last) of this split's document number ``document``."""
        index = int(self.documents[document])
        return int(self.document_offsets[index]), int(self.document_offsets[index + 1])

    def document_ends(self, document: int) -> list[int]:
        """Token offsets of a split's document's sentence bounds (sentences + 1 values): sentence i is ends[i]:ends[i+1]."""
        first, last = self.sentence_range(document)
        return np.asarray(self.sentence_offsets[first : last + 1]).tolist()  # a list: cheaper to index one by one


class Pair(NamedTuple):
    """Segment A is tokens[a_start:a_end], B is tokens[b_start:b_end]."""

    a_start: int
    a_end: int
    b_start: int
    b_end: int
    is_random_next: bool


def document_pairs(
    corpus: TokenizedCorpus, document: int, max_num_tokens: int, short_seq_prob: float, rng: np.random.Generator
) -> list[Pair]:
    """The NSP pairs of the split's document number ``document``; A + B never exceeds max_num_tokens (>= 2) tokens."""
    if corpus.num_documents < 2:
        raise ValueError("random-next pairs need at least two documents")
    # Sentence numbers below are the document's own: sentence i is tokens[ends[i]:ends[i + 1]].
    ends = corpus.document_ends(document)
    last = len(ends) - 1
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = int(rng.integers(2, max_num_tokens + 1))

    pairs: list[Pair] = []
    chunk_start = sentence = 0
    while sentence < last:
        sentence += 1
        if sentence < last and ends[sentence] - ends[chunk_start] < target:
            continue
        chunk_sentences = sentence - chunk_start
        split = chunk_start + (1 if chunk_sentences < 2 else int(rng.integers(1, chunk_sentences)))
        a_start, a_end = ends[chunk_start], ends[split]
        is_random_next = chunk_sentences == 1 or rng.random() < 0.5
        if is_random_next:
            b_start, b_end = _random_span(corpus, document, target - (a_end - a_start), rng)
            sentence = split  # the sentences B would have used start the next chunk
        else:
            b_start, b_end = a_end, ends[sentence]
        pairs.append(Pair(*_truncate_pair(a_start, a_end, b_start, b_end, max_num_tokens, rng), is_random_next))
        chunk_start = sentence
    return pairs


def _random_span(
    corpus: TokenizedCorpus, document: int, target_tokens: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Whole sentences of a different document from a random start until target_tokens (at least one)."""
    other = int(rng.integers(corpus.num_documents - 1))
    other += other >= document
    ends = corpus.document_ends(other)
    last = len(ends) - 1
    start = int(rng.integers(last))
    end = bisect.bisect_left(ends, ends[start] + target_tokens, lo=start)
    end = min(max(end, start + 1), last)
    return ends[start], ends[end]


def _truncate_pair(
    a_start: int, a_end: int, b_start: int, b_end: int, max_num_tokens: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """Drop tokens from the longer side (B on ties), front or back at random, until A + B fits."""
    excess = (a_end - a_start) + (b_end - b_start) - max_num_tokens
    if excess <= 0:
        return a_start, a_end, b_start, b_end
    for from_front in (rng.random(excess) < 0.5).tolist():
        if a_end - a_start > b_end - b_start:
            if from_front:
                a_start += 1
            else:
                a_end -= 1
        elif from_front:
            b_start += 1
        else:
            b_end -= 1
    return a_start, a_end, b_start, b_end
