"""The token store: every tokenized sentence of a corpus on disk, the first of data preparation's two passes.

Pass 1 appends each chunk's tokens and boundaries to flat files; pass 2 builds NSP pairs
by reading just the slices it needs, so a random-next segment can come from any other
document of its split while memory holds none of them. Files (native byte order):

- ``tokens.bin``: every non-empty sentence's token ids back to back;
- ``sentence_offsets.bin``: int64 [sentences + 1] into tokens;
- ``document_offsets.bin``: int64 [documents + 1] into sentences;
- ``<split>.documents.bin``: int64, the documents of a split (indices into document_offsets).

Tokens and sentence offsets are read with ``pread`` into small buffers, not memory-mapped:
the pages of a map that a process touches count towards its resident memory (and the
kernel's fault-around maps neighbouring pages with each one), so random reads over a map
made the peak RSS of pairing grow with the store, about 0.45 MiB per MB of corpus, even with
``madvise(MADV_DONTNEED)`` after every chunk. Read this way, the data stays in the page
cache, which the kernel reclaims under memory pressure, and out of the process. The two
per-document arrays (16 bytes a document) are read into memory whole.
"""

from __future__ import annotations

import os
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


class FileArray:
    """A flat array in a file, read by contiguous slices (``array[i:j]``, a copy) with ``pread``."""

    def __init__(self, path: Path, dtype):
        self.dtype = np.dtype(dtype)
        self._fd = os.open(path, os.O_RDONLY)
        self._length = os.fstat(self._fd).st_size // self.dtype.itemsize

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError("a FileArray is read by slices; index the slice it returns")
        start, stop, step = index.indices(self._length)
        if step != 1:
            raise ValueError("a FileArray reads contiguous slices only")
        count = max(stop - start, 0)
        size = self.dtype.itemsize
        data = os.pread(self._fd, count * size, start * size)
        if len(data) != count * size:
            raise OSError(f"short read from the token store ({len(data)} of {count * size} bytes)")
        return np.frombuffer(data, self.dtype)

    def close(self) -> None:
        os.close(self._fd)


class TokenStore:
    """A finished store (pass 2, in any process): slices read from disk, per-document arrays in memory."""

    def __init__(self, directory: Path, token_dtype: np.dtype):
        self.directory = directory
        self.tokens = FileArray(directory / TOKENS, token_dtype)
        self.sentence_offsets = FileArray(directory / SENTENCE_OFFSETS, np.int64)
        self.document_offsets = np.fromfile(directory / DOCUMENT_OFFSETS, np.int64)
        self._splits: dict[str, TokenizedCorpus] = {}

    def corpus(self, split: str) -> TokenizedCorpus:
        if split not in self._splits:
            documents = np.fromfile(self.directory / split_file(split), np.int64)
            self._splits[split] = TokenizedCorpus(self.tokens, self.sentence_offsets, self.document_offsets, documents)
        return self._splits[split]

    def close(self) -> None:
        self.tokens.close()
        self.sentence_offsets.close()
