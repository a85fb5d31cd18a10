"""The token store: every tokenized sentence of a corpus on disk, the first of data preparation's two passes.

Pass 1 appends each chunk's tokens and boundaries to flat files; pass 2 builds NSP pairs
by reading them through memory maps, so a random-next segment can come from any other
document of its split while memory holds none of them. Files (native byte order):

- ``tokens.bin``: every non-empty sentence's token ids back to back;
- ``sentence_offsets.bin``: int64 [sentences + 1] into tokens;
- ``document_offsets.bin``: int64 [documents + 1] into sentences;
- ``<split>.documents.bin``: int64, the documents of a split (indices into document_offsets).

A map's pages that a process has touched count towards its resident memory until it lets
them go: :meth:`TokenStore.release_pages` does so after every chunk of pairs, leaving them
to the kernel's page cache, which reclaims them under memory pressure.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from .nsp import TokenizedCorpus

TOKENS, SENTENCE_OFFSETS, DOCUMENT_OFFSETS = "tokens.bin", "sentence_offsets.bin", "document_offsets.bin"


def split_file(split: str) -> str:
    return f"{split}.documents.bin"


class TokenStoreWriter:
    """Appends tokenized documents; pass 1 runs it in the process that reads the corpus."""

    def __init__(self, directory: Path, token_dtype: np.dtype):
        directory.mkdir(parents=True)
        self.directory = directory
        self.token_dtype = np.dtype(token_dtype)
        self._files = {name: open(directory / name, "wb") for name in (TOKENS, SENTENCE_OFFSETS, DOCUMENT_OFFSETS)}
        self.num_tokens = self.num_sentences = self.num_documents = 0
        self._write(SENTENCE_OFFSETS, np.zeros(1, np.int64))
        self._write(DOCUMENT_OFFSETS, np.zeros(1, np.int64))

    def add(self, tokens: np.ndarray, sentence_lengths: np.ndarray, document_sentences: np.ndarray) -> None:
        """Documents with ``document_sentences[i]`` (> 0) sentences of ``sentence_lengths`` tokens each."""
        self._write(TOKENS, tokens.astype(self.token_dtype, copy=False))
        self._write(SENTENCE_OFFSETS, self.num_tokens + np.cumsum(sentence_lengths, dtype=np.int64))
        self._write(DOCUMENT_OFFSETS, self.num_sentences + np.cumsum(document_sentences, dtype=np.int64))
        self.num_tokens += len(tokens)
        self.num_sentences += len(sentence_lengths)
        self.num_documents += len(document_sentences)

    def _write(self, name: str, array: np.ndarray) -> None:
        self._files[name].write(memoryview(np.ascontiguousarray(array)).cast("B"))

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def write_split(self, split: str, documents: np.ndarray) -> None:
        with open(self.directory / split_file(split), "wb") as file:
            file.write(memoryview(np.ascontiguousarray(documents, dtype=np.int64)).cast("B"))


class TokenStore:
    """A finished store, read through memory maps (pass 2, in any process)."""

    def __init__(self, directory: Path, token_dtype: np.dtype):
        self.directory = directory
        self._maps: list[mmap.mmap] = []
        self.tokens = self._map(TOKENS, token_dtype)
        self.sentence_offsets = self._map(SENTENCE_OFFSETS, np.int64)
        self.document_offsets = self._map(DOCUMENT_OFFSETS, np.int64)
        self._splits: dict[str, TokenizedCorpus] = {}

    def _map(self, name: str, dtype) -> np.ndarray:
        with open(self.directory / name, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mapped)
        return np.frombuffer(mapped, dtype=dtype)

    def corpus(self, split: str) -> TokenizedCorpus:
        if split not in self._splits:
            documents = self._map(split_file(split), np.int64)
            self._splits[split] = TokenizedCorpus(self.tokens, self.sentence_offsets, self.document_offsets, documents)
        return self._splits[split]

    def release_pages(self) -> None:
        """Drop this process's mapping of the pages read so far (the data stays in the page cache)."""
        for mapped in self._maps:
            mapped.madvise(mmap.MADV_DONTNEED)
