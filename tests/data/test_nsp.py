"""NSP pair building on a synthetic corpus whose token ids reveal their document and sentence."""

import numpy as np
import pytest

from fastbert.data.nsp import TokenizedCorpus, document_pairs

MAX_NUM_TOKENS = 61


def tagged_corpus(num_documents: int, rng: np.random.Generator) -> TokenizedCorpus:
    """Every token of global sentence s has id s, so a pair shows which sentences it took."""
    sentences_per_document = rng.integers(3, 200, size=num_documents)
    sentence_lengths = rng.integers(1, 12, size=int(sentences_per_document.sum()))
    sentence_lengths[5] = 300  # one sentence longer than a whole pair
    tokens = np.repeat(np.arange(len(sentence_lengths)), sentence_lengths)
    return TokenizedCorpus.whole(
        tokens=tokens,
        sentence_offsets=np.concatenate([[0], np.cumsum(sentence_lengths)]),
        document_offsets=np.concatenate([[0], np.cumsum(sentences_per_document)]),
    )


@pytest.fixture(scope="module")
def corpus_and_pairs():
    corpus = tagged_corpus(60, np.random.default_rng(0))
    pairs = [
        (document, pair)
        for document in range(corpus.num_documents)
        for pair in document_pairs(corpus, document, MAX_NUM_TOKENS, 0.1, np.random.default_rng([3, 0, document]))
    ]
    return corpus, pairs


def test_segments_fit_and_come_from_the_right_documents(corpus_and_pairs):
    corpus, pairs = corpus_and_pairs
    document_of_sentence = np.repeat(np.arange(corpus.num_documents), np.diff(corpus.document_offsets))
    for document, pair in pairs:
        a = corpus.tokens[pair.a_start : pair.a_end]
        b = corpus.tokens[pair.b_start : pair.b_end]
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= MAX_NUM_TOKENS
        assert set(document_of_sentence[a]) == {document}
        b_documents = set(document_of_sentence[b])
        assert len(b_documents) == 1
        if pair.is_random_next:
            assert b_documents != {document}
        else:
            assert b_documents == {document}
            assert b.min() >= a.max()  # the true continuation follows A
            assert pair.b_start >= pair.a_end


def test_about_half_are_true_continuations(corpus_and_pairs):
    corpus, pairs = corpus_and_pairs
    n = len(pairs)
    is_next = sum(not pair.is_random_next for _, pair in pairs) / n
    # A chunk of one sentence is always a random pair: at most the one at each document's end,
    # plus the over-long sentence, with sentences this short relative to the target.
    forced_random = (corpus.num_documents + 1) / n
    sigma = (0.25 / n) ** 0.5
    assert 0.5 - forced_random - 4 * sigma <= is_next <= 0.5 + 4 * sigma
    assert n > 500  # enough pairs for the bound to mean something


def test_every_sentence_is_used(corpus_and_pairs):
    corpus, pairs = corpus_and_pairs
    used = np.zeros(len(corpus.sentence_offsets) - 1, dtype=bool)
    for _, pair in pairs:
        used[corpus.tokens[pair.a_start : pair.a_end]] = True
        if not pair.is_random_next:
            used[corpus.tokens[pair.b_start : pair.b_end]] = True
    # Truncation may drop a short sentence at a pair's edge; putting back unused sentences keeps the rest.
    assert used.mean() > 0.97


def test_same_generator_seed_gives_same_pairs():
    corpus = tagged_corpus(5, np.random.default_rng(1))
    first = document_pairs(corpus, 2, MAX_NUM_TOKENS, 0.1, np.random.default_rng([9, 0, 2]))
    again = document_pairs(corpus, 2, MAX_NUM_TOKENS, 0.1, np.random.default_rng([9, 0, 2]))
    other = document_pairs(corpus, 2, MAX_NUM_TOKENS, 0.1, np.random.default_rng([10, 0, 2]))
    assert first == again
    assert first != other
